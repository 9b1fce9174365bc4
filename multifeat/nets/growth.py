"""Growing G1 into G3 (Method A, Phase 3): ``G3 = G1 + added layers``.

:class:`GrownGenerator` wraps a :class:`~multifeat.nets.dcgan.DCGANGenerator` (the *base*, holding
G1's layers and, in Phase 3, G1's trained weights) and inserts residual blocks after chosen stages
through the base's ``forward(z, hook=...)``; the base network is used as is, not copied.

Each added block computes ``h + conv2(relu(norm(conv1(h))))`` with ``conv2``'s weight and bias
initialised to ZERO, so at initialisation every block is exactly the identity and
``G3(z) == G1(z)`` bit for bit (in eval mode, and in train mode too: batch-norm statistics of the
base see the same activations). Training then moves ``conv2`` away from zero and the added capacity
comes into use gradually, starting from G1's images.

What is added is configurable: ``add_blocks={16: 2, 32: 1}`` adds two blocks after the 16x16 stage
and one after the 32x32 stage; a list ``[16, 32]`` means one block at each. Resolutions are those of
the base's stages (4, 8, ..., image_size). ``{}`` adds nothing (G3 is G1).

Named points of the generator (used to say where Phase 3's AdaIN acts): ``"feat<R>"`` is the feature
map after the stage of resolution ``R`` (after the added blocks there), ``"image"`` the RGB output
before the final ``tanh``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from multifeat.errors import ConfigError
from multifeat.nets.dcgan import DCGANGenerator, norm_layer

Hook = Callable[[int, torch.Tensor], torch.Tensor]


class ResidualBlock(nn.Module):
    """``h + conv2(relu(norm(conv1(h))))``, 3x3 convs, ``conv2`` zero-initialised (identity at init).

    Shapes: [N, C, R, R] -> [N, C, R, R].
    """

    def __init__(self, channels: int, norm: str = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=norm == "none")
        self.norm = norm_layer(norm, channels)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=True)
        nn.init.normal_(self.conv1.weight, 0.0, 0.02)
        if self.conv1.bias is not None:
            nn.init.zeros_(self.conv1.bias)
        if isinstance(self.norm, (nn.BatchNorm2d, nn.InstanceNorm2d)):
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(self.act(self.norm(self.conv1(h))))


def parse_point(point: str, resolutions: Sequence[int]) -> int | str:
    """``"feat16"`` -> 16, ``"image"`` -> ``"image"``; anything else is a :class:`ConfigError`."""
    allowed = [f"feat{r}" for r in resolutions] + ["image"]
    if isinstance(point, str):
        p = point.strip().lower()
        if p == "image":
            return "image"
        if p.startswith("feat") and p[4:].isdigit() and int(p[4:]) in resolutions:
            return int(p[4:])
    raise ConfigError(f"adain_at must be one of {allowed}, got {point!r}")


def normalise_add_blocks(add_blocks: Mapping | Sequence | None, resolutions: Sequence[int]) -> dict[int, int]:
    """``{res: n}`` / ``[res, ...]`` / ``None`` -> ``{res: n}`` with int keys, checked against ``resolutions``.

    Keys may be ints, digit strings (``"16"``, as YAML/JSON may give them) or ``"feat16"``.
    """
    if add_blocks is None:
        return {}
    if isinstance(add_blocks, Mapping):
        items = list(add_blocks.items())
    elif isinstance(add_blocks, Sequence) and not isinstance(add_blocks, str):
        items = [(r, 1) for r in add_blocks]
    else:
        raise ConfigError(f"add_blocks must be a mapping {{resolution: n_blocks}} or a list of resolutions, got {add_blocks!r}")
    out: dict[int, int] = {}
    for key, n in items:
        k = str(key).strip().lower()
        k = k[4:] if k.startswith("feat") else k
        if not k.isdigit() or int(k) not in resolutions:
            raise ConfigError(f"add_blocks: resolution {key!r} is not a stage of the generator; choose from {list(resolutions)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"add_blocks: the number of blocks at {key!r} must be a non-negative integer, got {n!r}")
        out[int(k)] = out.get(int(k), 0) + n
    return {r: n for r, n in sorted(out.items()) if n > 0}


class _StopForward(Exception):
    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


class GrownGenerator(nn.Module):
    """G3: a DCGAN generator with residual blocks added at chosen resolutions.

    Args:
        base: the generator to grow (G1). It is used in place, not copied: pass a copy to keep G1.
        add_blocks: ``{resolution: n_blocks}`` or ``[resolution, ...]`` (one block each); default
            ``{16: 1}`` where the base has a 16x16 stage, else one block at the middle stage.

    ``forward(z, hook=None)``: z [N, z_dim] -> image [N, 3, S, S] in [-1, 1]; ``hook(res, h)``, if
    given, runs after the added blocks of each stage (same contract as the base's hook).
    """

    def __init__(self, base: DCGANGenerator, add_blocks: Mapping | Sequence | None = None) -> None:
        super().__init__()
        if not isinstance(base, DCGANGenerator):
            raise TypeError(f"GrownGenerator grows a DCGANGenerator, got {type(base).__name__}")
        self.base = base
        if add_blocks is None:
            res = base.resolutions
            add_blocks = {16: 1} if 16 in res else {res[len(res) // 2]: 1}
        self.add_blocks = normalise_add_blocks(add_blocks, base.resolutions)
        self.blocks = nn.ModuleDict(
            {
                str(r): nn.Sequential(*[ResidualBlock(base.channels[r], base.norm) for _ in range(n)])
                for r, n in self.add_blocks.items()
            }
        )

    # -- pass-through attributes of the base
    @property
    def z_dim(self) -> int:
        return self.base.z_dim

    @property
    def image_size(self) -> int:
        return self.base.image_size

    @property
    def resolutions(self) -> list[int]:
        return list(self.base.resolutions)

    @property
    def channels(self) -> dict[int, int]:
        return dict(self.base.channels)

    def sample_z(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return self.base.sample_z(n, generator=generator, device=device)

    def added_parameters(self) -> list[nn.Parameter]:
        """Parameters of the added blocks only (the base's are ``self.base.parameters()``)."""
        return list(self.blocks.parameters())

    # -- forward passes
    def _hook(self, hook: Hook | None, capture: dict | None = None, stop_at: int | None = None) -> Hook:
        final = self.base.resolutions[-1]

        def run(res: int, h: torch.Tensor) -> torch.Tensor:
            block = self.blocks[str(res)] if str(res) in self.blocks else None
            if block is not None:
                h = block(h)
            if hook is not None:
                h = hook(res, h)
            if stop_at is not None and res == stop_at:
                raise _StopForward(h)
            if capture is not None and res == final:
                capture["h"] = h
            return h

        return run

    def forward(self, z: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        return self.base(z, hook=self._hook(hook))

    def pre_tanh(self, z: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """The RGB map before the final ``tanh`` ([N, 3, S, S]); ``tanh`` of it is ``forward(z)``."""
        capture: dict = {}
        self.base(z, hook=self._hook(hook, capture=capture))
        return self.base.to_rgb(capture["h"])

    def features(self, z: torch.Tensor, resolution: int, hook: Hook | None = None) -> torch.Tensor:
        """The feature map after stage ``resolution`` (and its added blocks): [N, C_res, res, res].

        The later stages are not computed.
        """
        if resolution not in self.base.resolutions:
            raise ValueError(f"resolution {resolution} is not a stage of this generator ({self.base.resolutions})")
        try:
            self.base(z, hook=self._hook(hook, stop_at=resolution))
        except _StopForward as stop:
            return stop.value
        raise RuntimeError("the base generator did not call its hook at every stage")  # pragma: no cover
