"""Config loading, overrides and dict -> dataclass conversion errors."""

from __future__ import annotations

import dataclasses

import pytest

from multitower.config import (
    ConfigError,
    apply_overrides,
    build_dataclass,
    build_sections,
    dump_yaml,
    load_config,
    parse_yaml,
    run_time_keys,
    to_plain,
)
from multitower.train.trainer import TrainConfig


@dataclasses.dataclass(frozen=True)
class Inner:
    size: int
    kind: str = "a"

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"size must be positive, got {self.size}")


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner
    rate: float = 0.1
    maybe: int | None = None
    pair: tuple[float, float] = (0.0, 1.0)
    names: list[str] = dataclasses.field(default_factory=list)
    flag: bool = False


def test_build_nested_dataclass_with_conversions() -> None:
    out = build_dataclass(
        Outer,
        {"inner": {"size": 3}, "rate": 1, "maybe": None, "pair": [1, 2.5], "names": ["x"]},
        "m",
    )
    assert out == Outer(Inner(3), 1.0, None, (1.0, 2.5), ["x"], False)
    assert isinstance(out.rate, float) and isinstance(out.pair, tuple)


def test_every_problem_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        build_dataclass(
            Outer,
            {
                "inner": {"size": "big", "colour": 1},
                "rate": "fast",
                "flag": 1,
                "pair": [1],
                "extra": 2,
            },
            "model",
        )
    problems = info.value.problems
    assert (
        "model.extra: unknown key 'extra' in model; allowed keys: inner, rate, maybe, pair, names, flag"
        in problems
    )
    assert (
        "model.inner.colour: unknown key 'colour' in model.inner; allowed keys: size, kind"
        in problems
    )
    assert "model.inner.size: expected int, got 'big' (str)" in problems
    assert "model.rate: expected float, got 'fast' (str)" in problems
    assert "model.flag: expected bool, got 1 (int)" in problems
    assert "model.pair: expected 2 items (tuple[float, float]), got [1]" in problems
    assert len(problems) == 6


def test_missing_key_and_post_init_error_carry_the_path() -> None:
    with pytest.raises(ConfigError, match=r"^m\.inner: missing required key \(Inner\)$"):
        build_dataclass(Outer, {}, "m")
    # a message that starts with a field name names the dotted key
    with pytest.raises(ConfigError, match=r"^m\.inner\.size must be positive, got -2$"):
        build_dataclass(Outer, {"inner": {"size": -2}}, "m")
    with pytest.raises(ConfigError, match=r"m\.maybe: expected int \| null, got 'x' \(str\)"):
        build_dataclass(Outer, {"inner": {"size": 1}, "maybe": "x"}, "m")


def test_train_config_impossible_values() -> None:
    with pytest.raises(
        ConfigError, match=r"^train\.batch_size=10 must be divisible by grad_accum=4$"
    ):
        build_dataclass(TrainConfig, {"batch_size": 10, "grad_accum": 4}, "train")
    with pytest.raises(
        ConfigError, match=r"train\.distributed must be one of \('none', 'ddp', 'fsdp'\), got 'mpi'"
    ):
        build_dataclass(TrainConfig, {"distributed": "mpi"}, "train")


def test_build_sections_reports_unknown_sections_and_all_section_errors() -> None:
    with pytest.raises(ConfigError) as info:
        build_sections(
            {"recipe": "x", "modle": {}, "m": {"inner": {"size": 0}}},
            {"m": Outer},
            ignore=["recipe"],
        )
    assert info.value.problems == [
        "modle: unknown section 'modle'; allowed sections: recipe, m",
        "m.inner.size must be positive, got 0",
    ]


def test_yaml_floats_and_overrides(tmp_path) -> None:
    assert parse_yaml("a: 1e-3\nb: 3\nc: 2.5E+2\nd: 1_000", source="s") == {
        "a": 1e-3,
        "b": 3,
        "c": 250.0,
        "d": 1000,
    }
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1.0e-3\nmodel: {d_model: 8}\n")
    config = load_config(
        path,
        ["train.lr=3e-4", "model.norm=layer", "train.fusion_lr=null", "data.seq_len=9", "x=[1, 2]"],
    )
    assert config == {
        "train": {"lr": 3e-4, "fusion_lr": None},
        "model": {"d_model": 8, "norm": "layer"},
        "data": {"seq_len": 9},
        "x": [1, 2],
    }
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, ["noequals", "model.d_model.x=1", ".a=1"])
    assert len(info.value.problems) == 3
    assert "model.d_model is 8, not a section" in info.value.problems[1]


def test_only_true_and_false_are_booleans() -> None:
    text = "a: off\nb: on\nc: yes\nd: no\ne: true\nf: False\ng: TRUE\nh: 'off'"
    assert parse_yaml(text, source="s") == {
        "a": "off", "b": "on", "c": "yes", "d": "no", "e": True, "f": False, "g": True, "h": "off",
    }  # fmt: skip
    config = apply_overrides({}, ["train.progress=off"])
    assert build_dataclass(TrainConfig, config["train"], "train").progress == "off"


def test_load_errors_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=f"config file {tmp_path} is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_dump_yaml_roundtrips_dataclasses() -> None:
    text = dump_yaml({"train": TrainConfig(max_steps=700, betas=(0.8, 0.9))})
    again = build_dataclass(TrainConfig, parse_yaml(text, source="dump")["train"], "train")
    assert again == TrainConfig(max_steps=700, betas=(0.8, 0.9))


def test_top_level_path_has_no_leading_dot() -> None:
    with pytest.raises(ConfigError) as info:
        build_dataclass(Outer, {"inner": {"size": 1, "x": 2}, "rate": "r"}, "")
    assert info.value.problems == [
        "inner.x: unknown key 'x' in inner; allowed keys: size, kind",
        "rate: expected float, got 'r' (str)",
    ]


# -- sections that are model configs with run-time keys ------------------------------------------
@dataclasses.dataclass(frozen=True)
class Tower:
    vocab: int  # known at run time
    depth: int
    width: int = 8

    def __post_init__(self) -> None:
        if self.depth < 1 or self.vocab < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")


@dataclasses.dataclass(frozen=True)
class Zip:
    towers: dict[str, Tower]
    every: int = 1

    def __post_init__(self) -> None:
        depth = min(t.depth for t in self.towers.values())
        if not 1 <= self.every <= depth:
            raise ValueError(f"every={self.every} must lie in [1, {depth}]")


@dataclasses.dataclass(frozen=True)
class Experiment:
    a: Tower = dataclasses.field(
        default_factory=lambda: Tower(vocab=1, depth=4), metadata=run_time_keys("vocab")
    )
    b: Tower = dataclasses.field(
        default_factory=lambda: Tower(vocab=1, depth=4), metadata=run_time_keys("vocab")
    )
    zip: Zip = dataclasses.field(
        default_factory=lambda: Zip({"a": Tower(1, 4), "b": Tower(1, 4)}),
        metadata=run_time_keys(towers={"a": "a", "b": "b"}),
    )
    outer: Outer = dataclasses.field(default_factory=lambda: Outer(Inner(5), rate=0.5))


def test_a_partial_section_keeps_the_field_defaults_missing_keys() -> None:
    built = build_dataclass(Experiment, {"a": {"width": 16}, "outer": {"flag": True}}, "")
    assert built.a == Tower(vocab=1, depth=4, width=16)  # depth from the default, not required
    assert built.outer == Outer(Inner(5), rate=0.5, flag=True)  # rate 0.5, not the class's 0.1
    assert build_dataclass(Experiment, {}, "") == Experiment()


def test_run_time_keys_are_not_config_keys_and_not_dumped() -> None:
    with pytest.raises(ConfigError) as info:
        build_dataclass(Experiment, {"a": {"vocab": 9, "size": 1}}, "")
    assert info.value.problems == [
        "a.vocab: set by the program at run time, not by the config; remove it",
        "a.size: unknown key 'size' in a; allowed keys: depth, width",
    ]
    built = build_dataclass(Experiment, {"a": {"depth": 2}}, "")
    plain = to_plain(built)
    assert plain["a"] == {"depth": 2, "width": 8} and plain["zip"] == {"every": 1}
    assert build_dataclass(Experiment, parse_yaml(dump_yaml(built), source="dump"), "") == built


def test_a_section_built_from_siblings_is_checked_against_them() -> None:
    built = build_dataclass(Experiment, {"a": {"depth": 2}, "b": {"depth": 3}, "zip": {}}, "")
    assert built.zip.towers == {"a": built.a, "b": built.b}
    # every=3 fits the default towers (depth 4) but not the configured ones
    with pytest.raises(ConfigError) as info:
        build_dataclass(Experiment, {"a": {"depth": 2}, "zip": {"every": 3}}, "")
    assert info.value.problems == ["zip.every=3 must lie in [1, 2]"]
    # a broken sibling is reported once; the section built from it is not checked
    with pytest.raises(ConfigError) as info:
        build_dataclass(Experiment, {"a": {"depth": 0}, "zip": {"every": 3}}, "")
    assert info.value.problems == ["a.depth must be >= 1, got 0"]
