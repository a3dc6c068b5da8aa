"""Factor Transfer's paraphraser (teacher side) and translator (student side).

RepDistiller ``models/util.py`` (methods.md §1.14): the paraphraser is a conv auto-encoder on the
teacher map, ``C → C → kC → kC`` (conv 3×3, LeakyReLU 0.1, no BN by default) and a mirrored
transposed-conv decoder; the translator is the same encoder shape on the student map,
``C_s → C_s → kC_t → kC_t``, with BN. ``k = 0.5``.
"""

from __future__ import annotations

from torch import Tensor, nn


def _block(conv: type[nn.Module], c_in: int, c_out: int, use_bn: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [conv(c_in, c_out, 3, 1, 1)]
    if use_bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.1))
    return layers


class Paraphraser(nn.Module):
    """Auto-encoder of the teacher map; :meth:`encode` gives the teacher factor."""

    def __init__(self, channels: int, rate: float = 0.5, use_bn: bool = False) -> None:
        super().__init__()
        mid = int(channels * rate)
        if mid < 1:
            raise ValueError(f"paraphraser rate {rate} leaves no channel of {channels}")
        self.encoder = nn.Sequential(*_block(nn.Conv2d, channels, channels, use_bn),
                                     *_block(nn.Conv2d, channels, mid, use_bn),
                                     *_block(nn.Conv2d, mid, mid, use_bn))
        self.decoder = nn.Sequential(*_block(nn.ConvTranspose2d, mid, mid, use_bn),
                                     *_block(nn.ConvTranspose2d, mid, channels, use_bn),
                                     *_block(nn.ConvTranspose2d, channels, channels, use_bn))

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(factor, reconstruction)``."""
        factor = self.encoder(x)
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """Student-side encoder to the teacher factor's width (``int(k·C_t)`` channels)."""

    def __init__(self, s_channels: int, t_channels: int, rate: float = 0.5, use_bn: bool = True) -> None:
        super().__init__()
        mid = int(t_channels * rate)
        if mid < 1:
            raise ValueError(f"translator rate {rate} leaves no channel of {t_channels}")
        self.encoder = nn.Sequential(*_block(nn.Conv2d, s_channels, s_channels, use_bn),
                                     *_block(nn.Conv2d, s_channels, mid, use_bn),
                                     *_block(nn.Conv2d, mid, mid, use_bn))

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)
