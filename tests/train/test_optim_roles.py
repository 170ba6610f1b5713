"""Parameter groups from the roles a model declares (fusion parameters, gates), matched by
identity: the same groups as the old name-based rule on the real models, whatever the
wrappers do to the names."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from multitower.models.baseline import VocabExpansionConfig, VocabExpansionLM
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.models.vit import ViTConfig
from multitower.models.zipper import Zipper, ZipperConfig
from multitower.train.optim import is_no_decay, param_groups

TEXT = DecoderConfig(vocab_size=40, d_model=32, num_layers=4, num_heads=4)
SPEECH = DecoderConfig(vocab_size=30, d_model=48, num_layers=6, num_heads=4)
SETTINGS = [
    dict(fusion_lr=None, gate_lr=None),
    dict(fusion_lr=1e-2, gate_lr=None),
    dict(fusion_lr=1e-2, gate_lr=0.05),
    dict(fusion_lr=None, gate_lr=0.05),
]


def name_based_buckets(
    model: nn.Module, fusion_lr: float | None, gate_lr: float | None
) -> dict[str, list[nn.Parameter]]:
    """The rule before roles: fusion = names under ``fusion.``, gates = ``fusion.*gate*``."""
    buckets: dict[str, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if gate_lr is not None and name.startswith("fusion.") and "gate" in name:
            buckets.setdefault("gates", []).append(param)
            continue
        fusion = fusion_lr is not None and name.startswith("fusion.")
        kind = "no_decay" if is_no_decay(name, param) else "decay"
        buckets.setdefault(f"fusion_{kind}" if fusion else kind, []).append(param)
    order = ("decay", "no_decay", "fusion_decay", "fusion_no_decay", "gates")
    return {k: buckets[k] for k in order if k in buckets}


def groups(model: nn.Module, **kw) -> dict[str, list[nn.Parameter]]:
    return {g["name"]: g["params"] for g in param_groups(model, lr=1e-3, weight_decay=0.1, **kw)}


def same_params(a: dict[str, list[nn.Parameter]], b: dict[str, list[nn.Parameter]]) -> None:
    """Same group names, same parameter objects in the same order."""
    assert list(a) == list(b)
    for name in a:
        assert [id(p) for p in a[name]] == [id(p) for p in b[name]], name


def zipper(frozen: tuple[str, ...] = ()) -> Zipper:
    torch.manual_seed(0)
    z = Zipper(ZipperConfig({"text": TEXT, "speech": SPEECH}, cross_attention_every=2))
    z.freeze_towers(frozen)
    return z


def mammut() -> MaMMUT:
    vision = ViTConfig(image_size=16, patch_size=4, d_model=24, num_layers=2, num_heads=2)
    return MaMMUT(
        MaMMUTConfig(vocab_size=40, d_model=32, num_layers=4, num_heads=4, vision=vision,
                     embed_dim=16, max_seq_len=24, cross_attn_every=2)
    )  # fmt: skip


MODELS = {
    "zipper": zipper,
    "zipper_frozen_text": lambda: zipper(("text",)),
    "decoder": lambda: DecoderTower(TEXT),
    "baseline": lambda: VocabExpansionLM(
        VocabExpansionConfig(
            DecoderConfig(vocab_size=70, d_model=32, num_layers=2, num_heads=4),
            {"text": 40, "speech": 30},
        )
    ),
    "mammut": mammut,
}


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("kw", SETTINGS)
def test_same_groups_as_the_name_based_rule(model_name, kw):
    model = MODELS[model_name]()
    same_params(groups(model, **kw), name_based_buckets(model, **kw))


def test_zipper_roles_are_its_fusion_modules_and_its_gates():
    z = zipper()
    g = groups(z, fusion_lr=1e-2, gate_lr=0.05)
    assert len(g["gates"]) == 2 * len(z.points)  # gate_attn and gate_mlp of every block
    assert all(p.ndim == 0 for p in g["gates"])
    fusion = {id(p) for p in z.fusion.parameters()}
    in_fusion_groups = [p for k in ("fusion_decay", "fusion_no_decay", "gates") for p in g[k]]
    assert sorted(map(id, in_fusion_groups)) == sorted(fusion)


class Holder(nn.Module):
    """Changes every name: ``inner.fusion...``, ``inner.towers...``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.extra = nn.Linear(3, 3)


@pytest.mark.parametrize("kw", SETTINGS)
def test_renamed_parameters_keep_their_groups(kw):
    z = zipper()
    held = Holder(z)
    got = groups(held, **kw)
    # the wrapper's own parameters join the tower groups, the Zipper's are grouped as alone
    want = groups(z, **kw)
    want["decay"] = [*want["decay"], held.extra.weight]
    want["no_decay"] = [*want["no_decay"], held.extra.bias]
    same_params(got, want)
    if kw["fusion_lr"] is not None:  # the old rule misses them: its names have moved
        assert "fusion_decay" not in name_based_buckets(held, **kw)


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of one rank (no ports: a file store)."""
    if dist.is_initialized():
        pytest.skip("a process group is already running")
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


@pytest.mark.usefixtures("one_process_group")
def test_ddp_module_prefix_keeps_the_groups():
    z = zipper()
    ddp = DistributedDataParallel(z)
    assert next(n for n, _ in ddp.named_parameters()).startswith("module.")
    for kw in SETTINGS:
        same_params(groups(ddp, **kw), groups(z, **kw))


class Sharded(nn.Module):
    """Zipper's layout with 1-element gates: FSDP2 cannot shard scalar parameters, so
    it cannot shard a Zipper (whose gates are 0-d)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.norm = nn.LayerNorm(4)
        self.fusion = nn.ModuleDict({"proj": nn.Linear(4, 4), "norm": nn.RMSNorm(4)})
        self.fusion.gate = nn.Parameter(torch.zeros(1))

    def fusion_parameters(self) -> list[nn.Parameter]:
        return list(self.fusion.parameters())

    def gate_parameters(self) -> list[nn.Parameter]:
        return [self.fusion.gate]


@pytest.mark.usefixtures("one_process_group")
def test_fsdp2_sharded_parameters_keep_the_groups():
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    torch.manual_seed(0)
    model = Sharded()
    kw = dict(fusion_lr=1e-2, gate_lr=0.05)
    before = {k: [n for n, p in model.named_parameters() if any(p is q for q in v)]
              for k, v in groups(model, **kw).items()}  # fmt: skip
    assert before == {
        "decay": ["blocks.0.weight", "blocks.1.weight"],
        "no_decay": ["blocks.0.bias", "blocks.1.bias", "norm.weight", "norm.bias"],
        "fusion_decay": ["fusion.proj.weight"],
        "fusion_no_decay": ["fusion.proj.bias", "fusion.norm.weight"],
        "gates": ["fusion.gate"],
    }
    mesh = init_device_mesh("cpu", (1,))
    for block in model.blocks:  # as train.distributed.wrap_model shards
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    after = groups(model, **kw)
    # FSDP2 replaced the parameters by sharded ones: the roles name the new objects
    assert all(isinstance(p, DTensor) for v in after.values() for p in v)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {k: [names[id(p)] for p in v] for k, v in after.items()} == before
