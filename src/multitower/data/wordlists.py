"""Word lists for the sentence generator in :mod:`multitower.data.sentences`.

Plain English words, lower case, letters ``a-z`` only, grouped by the role they
play in the sentence templates. Inflected forms (plurals, verb tenses) are
derived in :mod:`multitower.data.inflection`; only irregular forms are listed here.
Spelling is American so that every word reads the same way in every voice.
"""

from __future__ import annotations


def _words(block: str) -> tuple[str, ...]:
    """Split a whitespace-separated block into a tuple, keeping first occurrences."""
    return tuple(dict.fromkeys(block.split()))


# People: subjects of most clauses and the first object of verbs like "give".
PEOPLE = _words(
    """
    man woman child boy girl teacher doctor nurse farmer baker driver pilot
    student friend neighbor lawyer painter writer singer dancer soldier sailor
    king queen prince princess captain worker manager cook waiter guard hunter
    fisherman policeman stranger visitor traveler artist scientist engineer
    musician player coach judge priest merchant shepherd carpenter tailor miner
    clerk banker author poet actor actress pupil uncle aunt cousin brother sister
    mother father grandmother grandfather son daughter husband wife baby guest
    host leader officer thief hero servant master owner partner customer
    passenger reader speaker swimmer runner climber gardener builder mayor chief
    professor dentist plumber butcher barber librarian photographer journalist
    detective explorer inventor pianist drummer knight wizard giant stranger
    volunteer tourist shopkeeper mechanic firefighter secretary president
    """
)

# Animals: also subjects, and objects of verbs like "feed" or "chase".
ANIMALS = _words(
    """
    dog cat horse cow sheep goat pig bird fish mouse rabbit fox wolf bear lion
    tiger deer duck goose chicken owl eagle snake frog bee ant spider whale
    dolphin monkey elephant donkey camel squirrel turtle crow parrot swan bat
    beetle butterfly kitten puppy lamb calf pony rat hen zebra giraffe penguin
    kangaroo hamster lizard pigeon sparrow raven shark octopus crab
    """
)

# Concrete things: objects of transitive verbs.
THINGS = _words(
    """
    book letter box key door window table chair bed lamp cup plate bowl spoon
    knife fork bottle glass basket bag coat hat shoe shirt dress ring watch clock
    phone camera picture map pen pencil paper card ticket coin bell rope ladder
    hammer nail brush mirror candle blanket pillow towel umbrella wallet purse
    jacket scarf glove boot sock belt button needle bucket barrel wheel engine
    car truck bus train boat ship bicycle plane kite ball toy doll drum guitar
    piano violin flute newspaper magazine note message gift parcel envelope stamp
    apple orange banana pear peach plum grape lemon cherry melon bread cake pie
    cheese egg sandwich cookie potato tomato carrot onion bean cabbage pumpkin
    flower rose tree leaf branch seed stone rock shell feather stick log brick
    board fence gate flag sign lantern torch sword shield arrow crown jewel
    diamond pearl necklace bracelet comb sponge broom kettle pot pan oven stove
    shelf drawer cupboard desk sofa carpet curtain computer screen keyboard radio
    television battery wire cable switch machine tool saw shovel rake axe net
    tent sail anchor compass telescope globe statue painting photograph album
    diary calendar notebook folder chart list recipe menu bill receipt report
    puzzle prize medal trophy ribbon balloon helmet backpack suitcase pillow
    jar tray napkin whistle marble pebble crayon ruler scissors magnet bottle
    """
)

# Uncountable things: used without an article ("she drank some milk").
MASS_NOUNS = _words(
    """
    water milk tea coffee juice soup rice salt sugar honey butter bread sand
    snow rain music money furniture luggage wood paper gold silver oil flour
    cotton wool grass mud smoke advice information homework news
    """
)

# Ideas and events: objects of verbs like "explain" or "remember".
ABSTRACT = _words(
    """
    story song poem lesson question answer problem idea plan dream secret
    promise mistake joke game reason rule word name number color shape
    journey holiday birthday party meeting concert wedding festival race
    accident adventure decision discovery experiment plan result chance
    choice surprise warning message memory habit skill language history
    """
)

# Places: objects of location and direction phrases.
PLACES = _words(
    """
    house garden kitchen school library market station church hospital office
    shop bank park river lake forest mountain hill village city town farm field
    beach island harbor castle palace museum theater restaurant hotel airport
    bakery factory prison stadium temple valley desert cave road street square
    corner bridge tunnel cottage barn stable meadow pond stream shore cellar
    attic classroom hallway bedroom bathroom balcony playground zoo circus
    jungle orchard vineyard lighthouse windmill fountain courtyard
    """
)

# Adjectives used before nouns and after "is".
ADJECTIVES = _words(
    """
    big small old young new tall short long little large tiny huge happy sad
    angry tired hungry thirsty busy lazy brave clever quiet loud kind cruel gentle
    polite rude proud shy calm wild strange famous rich poor beautiful pretty ugly
    handsome clean dirty wet dry hot cold warm cool bright dark heavy light soft
    hard smooth rough sharp sweet sour bitter fresh empty full broken red blue
    green yellow black white brown gray purple pink golden wooden round narrow
    wide deep shallow thick thin fast slow early late strong weak healthy sick
    cheap expensive simple difficult easy important useful careful careless honest
    lucky funny serious friendly lonely curious nervous patient silent noisy
    ancient modern quick sleepy hairy shiny dusty muddy sunny rainy windy cloudy
    foggy frozen salty spicy tasty delicious fancy plain pale precious rare common
    private public foreign local distant hidden missing closed crowded steep flat
    fierce mighty humble clumsy graceful elegant cheerful grumpy jolly eager
    anxious wise foolish silly crazy fair gloomy cozy tidy messy hollow solid
    loose tight ripe rotten stale crisp juicy fluffy sticky slippery
    """
)

# Adverbs of manner: end of a clause ("he laughed loudly").
ADVERBS = _words(
    """
    quickly slowly quietly loudly carefully happily sadly angrily gently
    politely rudely proudly calmly bravely easily suddenly finally
    patiently nervously eagerly softly badly well early late often rarely
    always never sometimes usually again together alone outside inside
    upstairs downstairs everywhere nearby already soon now today tonight
    """
)

# Time expressions: placed at the start or end of a clause, matched to its tense.
NEUTRAL_TIME_PHRASES = (
    "every day",
    "every morning",
    "in the morning",
    "in the afternoon",
    "in the evening",
    "at night",
    "on monday",
    "on tuesday",
    "on wednesday",
    "on thursday",
    "on friday",
    "on saturday",
    "on sunday",
    "in january",
    "in march",
    "in april",
    "in june",
    "in july",
    "in august",
    "in october",
    "in december",
    "in the spring",
    "in the winter",
    "after dinner",
    "before breakfast",
    "after lunch",
    "at noon",
    "at midnight",
)
PAST_TIME_PHRASES = (
    "yesterday",
    "last night",
    "last week",
    "last year",
    "a moment ago",
    "long ago",
    "this morning",
)
FUTURE_TIME_PHRASES = (
    "tomorrow",
    "tonight",
    "next week",
    "next month",
    "next summer",
    "this evening",
    "soon",
)

# Given names: singular subjects and objects, and possessors ("anna's").
NAMES = _words(
    """
    john mary anna peter paul lucy james emma david sarah michael laura thomas
    kate robert alice william helen george susan henry rose charles grace frank
    ruth edward clara arthur ellen oliver sophie daniel julia samuel martha
    jack nora harry olivia leo maria simon hannah victor irene oscar diana
    felix linda hugo nina max eva ben amy tom jane sam lily
    """
)

# Prepositions of location ("in the garden") and direction ("to the market").
LOCATION_PREPOSITIONS = ("in", "near", "behind", "outside", "inside", "beside", "at")
THING_PREPOSITIONS = ("on", "under", "beside", "behind", "near", "next to", "in front of")
DIRECTION_PREPOSITIONS = ("to", "into", "toward", "across", "through", "past", "around")

# Transitive verbs: subject verb object.
TRANSITIVE_VERBS = _words(
    """
    see find take bring carry open close buy sell read write build break fix
    paint clean wash cook eat hold lift drop push pull throw catch kick hit
    watch hear help call meet visit follow chase love like hate want need keep
    lose hide steal borrow send show teach answer count cut draw fill fold hang
    pack plant pick protect remember forget repair save share touch use wear
    win move mend order polish prepare check collect cover deliver describe
    discover enjoy explain feed greet guard invite join kiss lead leave mark
    miss notice offer own pass pay place play print raise reach receive return
    rescue serve shake shut sign sort spill spot squeeze study taste tear test
    thank tie trust turn wake warn wrap weigh choose bake boil burn cross dig
    fetch grab hug drag climb copy dry empty fry heat hire iron kick load lock
    measure mix park pour punish push rob rub scrub shave sharpen slice smell
    stir stretch sweep tickle unlock weave wipe admire attack bury chop decorate
    examine hunt lend obey recognize remove replace scare
    """
)

# Intransitive verbs: subject verb (adverb).
INTRANSITIVE_VERBS = _words(
    """
    sleep laugh cry smile sing dance swim run walk jump sit stand wait talk
    shout whisper cough sneeze breathe rest play work fall rise shine grow
    disappear appear arrive hurry travel wander fly float sink shiver yawn nod
    wave blink listen agree complain pray relax hide stop win lose cheer
    clap giggle groan knock sigh snore stumble tremble vanish whistle
    """
)

# Verbs of motion, followed by a direction phrase ("walked to the station").
MOTION_VERBS = _words(
    """
    walk run drive ride travel hurry return go come move sail fly swim climb
    wander march rush crawl jog stroll hike drift
    """
)

# Verbs with two objects: "gave the boy a book" / "gave a book to the boy".
DITRANSITIVE_VERBS = _words("give show send bring lend hand offer sell teach throw pass read")

# Verbs taking a clause: "she thinks that ...".
CLAUSE_VERBS = _words("think know believe say hope hear forget remember feel notice")

# Irregular past tense forms. Every other verb is inflected by rule.
IRREGULAR_PAST = {
    "see": "saw",
    "find": "found",
    "take": "took",
    "give": "gave",
    "bring": "brought",
    "buy": "bought",
    "sell": "sold",
    "read": "read",
    "write": "wrote",
    "build": "built",
    "break": "broke",
    "eat": "ate",
    "drink": "drank",
    "hold": "held",
    "throw": "threw",
    "catch": "caught",
    "hit": "hit",
    "hear": "heard",
    "meet": "met",
    "keep": "kept",
    "lose": "lost",
    "hide": "hid",
    "steal": "stole",
    "lend": "lent",
    "send": "sent",
    "teach": "taught",
    "cut": "cut",
    "draw": "drew",
    "hang": "hung",
    "forget": "forgot",
    "sing": "sang",
    "wear": "wore",
    "win": "won",
    "feed": "fed",
    "lead": "led",
    "leave": "left",
    "pay": "paid",
    "shake": "shook",
    "shut": "shut",
    "tear": "tore",
    "wake": "woke",
    "choose": "chose",
    "dig": "dug",
    "sleep": "slept",
    "run": "ran",
    "swim": "swam",
    "sit": "sat",
    "stand": "stood",
    "fall": "fell",
    "rise": "rose",
    "shine": "shone",
    "grow": "grew",
    "fly": "flew",
    "sink": "sank",
    "go": "went",
    "come": "came",
    "ride": "rode",
    "drive": "drove",
    "say": "said",
    "know": "knew",
    "think": "thought",
    "feel": "felt",
    "begin": "began",
    "sweep": "swept",
    "weave": "wove",
    "hand": "handed",
    "make": "made",
    "tell": "told",
    "spend": "spent",
    "understand": "understood",
}

# Verbs that double their final consonant before -ed / -ing.
DOUBLING_VERBS = frozenset(
    """
    run swim sit stop drop shop plan hit cut put get let set begin forget dig
    win spin grab hug nod rob rub skip slip tap trap wrap chat clap drag fit
    grin hop jog knit pat pin plot shut spot step tip trim beg bet admit prefer
    regret commit chop mop sob stir ship
    """.split()
)

# Irregular plural forms. Every other noun is inflected by rule.
IRREGULAR_PLURAL = {
    "man": "men",
    "woman": "women",
    "child": "children",
    "person": "people",
    "mouse": "mice",
    "goose": "geese",
    "foot": "feet",
    "tooth": "teeth",
    "sheep": "sheep",
    "fish": "fish",
    "deer": "deer",
    "knife": "knives",
    "wife": "wives",
    "leaf": "leaves",
    "shelf": "shelves",
    "thief": "thieves",
    "wolf": "wolves",
    "calf": "calves",
    "scarf": "scarves",
    "fisherman": "fishermen",
    "policeman": "policemen",
    "potato": "potatoes",
    "tomato": "tomatoes",
    "hero": "heroes",
    "scissors": "scissors",
    "life": "lives",
}

# Nouns whose article is "a" although they start with a vowel letter, and the reverse.
A_BEFORE_VOWEL_LETTER = frozenset({"uniform", "unicorn", "university", "useful", "usual", "one"})
AN_BEFORE_CONSONANT_LETTER = frozenset({"hour", "honest", "heir"})
