"""FickleNet's classification head: feature map expansion, centre-preserving
spatial dropout, an s×s stride-s classifier and global average pooling.

Follows Lee et al., "FickleNet" (CVPR 2019), Sec. 3.1–3.2 (see also
``docs/method.md``, section 1): the backbone's feature map ``x`` (B, C, h, w) is expanded
to (B, C, s·h, s·w) so that block (i, j) holds the s×s window of ``x`` centred
on (i, j) (zero padded); each element of the expanded map is dropped with
probability ``p`` except the centre of every block; the kept elements are
scaled by 1/(1-p); a conv with kernel s and stride s gives a (B, K, h, w) score
map, averaged over space.

Whether the never-dropped centre is scaled by 1/(1-p) as well is not stated in
the paper; ``scale_centre`` chooses (``docs/method.md`` reports the measurement
behind the default). Without a mask (eval mode without stochastic inference) the
head returns the *expectation* of the training output over masks, as ordinary
dropout does at test time: off-centre taps weigh 1 (kept with probability 1-p,
scaled by 1/(1-p)), the centre weighs 1/(1-p) or 1.

The literal expansion costs s² times the memory of ``x`` (about 280 MB per
image at s=9 on a 512×41×41 map), plus as much again for its mask and its
gradient. Because the classifier is linear and followed by global average
pooling, the score only needs, for each of the s² offsets (a, b) of a window,
the spatial sum of the kept, shifted feature map:

    S_k = bias_k + 1/(h·w) · Σ_{a,b} t[a,b] Σ_c W[k,c,a,b] · z[c,a,b],
    z[c,a,b] = Σ_{i,j} m[c, i·s+a, j·s+b] · x_pad[c, i+a, j+b],

with ``t`` the per-tap scale (:meth:`FickleHead.tap_scales`).

:class:`_FickleGAP` computes this offset by offset, keeping only ``z``
(B, C, s, s) for the backward pass. When the head samples the mask itself, it
keeps only the seed of the random generator and draws every offset's mask
again in the backward pass, so a training step never holds more than one
offset's mask at a time: peak memory is a small multiple of ``x`` whatever s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ficklenet.choices import Dropout
from ficklenet.errors import UserValueError


def check_rate(p: float, key: str = "p") -> float:
    """A dropout rate in [0, 1) (0: the deterministic classifier), else a ValueError
    naming ``key``."""
    if not 0.0 <= float(p) < 1.0:
        raise UserValueError(f"{key}={p}: the dropout rate must be in [0, 1)")
    return float(p)


def expand(x: Tensor, kernel_size: int) -> Tensor:
    """The literal expanded map (B, C, s·h, s·w) of ``x`` (B, C, h, w).

    Block (i, j), i.e. rows i·s..i·s+s-1 and columns j·s..j·s+s-1, holds the s×s
    window of ``x`` centred on (i, j), zero padded at the border.
    """
    s = kernel_size
    b, c, h, w = x.shape
    cols = F.unfold(x, s, padding=s // 2)  # (B, C·s·s, h·w), ordered (c, a, b)
    blocks = cols.view(b, c, s, s, h, w).permute(0, 1, 4, 2, 5, 3)  # (B, C, h, a, w, b)
    return blocks.reshape(b, c, h * s, w * s)


def _offset_keep(
    generator: torch.Generator, shape: tuple[int, ...], p: float, device: torch.device
) -> Tensor:
    """One offset's keep-mask: each element kept with probability 1-p."""
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float32) >= p


def _offsets(s: int) -> list[tuple[int, int]]:
    """The s² window offsets in the order masks are drawn (row-major)."""
    return [(a, b) for a in range(s) for b in range(s)]


class _FickleGAP(torch.autograd.Function):
    """GAP(conv_{s×s, stride s}(t ⊙ mask ⊙ expand(x))) without the expansion.

    ``t`` (s, s) scales each tap of a window (:meth:`FickleHead.tap_scales`).

    The mask comes either as a bool tensor in the expanded layout (broadcast
    over the batch when its batch size is 1) or as a generator seed, from which
    the masks of all non-centre offsets are drawn in a fixed order, once in
    forward and once more in backward. Both passes work in one reusable buffer
    the size of ``x``: forward holds ``x`` + buffer, backward the gradient +
    buffer, whatever s.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        taps: Tensor,
        p: float,
        mask: Tensor | None,
        seed: int | None,
    ) -> Tensor:
        s = weight.shape[-1]
        b, c, h, w = x.shape
        z = x.new_zeros(b, c, s, s)
        draws = _OffsetMasks(mask, seed, p, x, s)
        for a, bb in _offsets(s):
            out_rows, out_cols, in_rows, in_cols = _window_overlap(a, bb, s, h, w)
            shifted = x[:, :, in_rows, in_cols]
            keep = draws.keep(a, bb)
            if keep is None:
                z[:, :, a, bb] = shifted.sum(dim=(2, 3))
            else:
                kept = keep[:, :, out_rows, out_cols]
                z[:, :, a, bb] = kept.mul_(shifted).sum(dim=(2, 3))
        taps = taps.to(z.dtype) / (h * w)
        scores = torch.einsum("kcab,ncab->nk", weight, z * taps)
        if bias is not None:
            scores = scores + bias
        ctx.save_for_backward(weight, z, taps, mask if mask is not None else x.new_empty(0))
        ctx.meta = (p, seed, mask is not None, bias is not None, x.shape, x.dtype)
        return scores

    @staticmethod
    def backward(ctx, grad_scores: Tensor):  # type: ignore[override]
        weight, z, taps, mask = ctx.saved_tensors
        p, seed, has_mask, has_bias, x_shape, x_dtype = ctx.meta
        s = weight.shape[-1]
        b, c, h, w = x_shape
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # dS_k/dz[c,a,b] = W[k,c,a,b]·t[a,b]/(h·w), and dz[c,a,b]/dx is that
            # offset's mask, shifted back.
            grad_z = torch.einsum("nk,kcab->ncab", grad_scores, weight) * taps
            grad_x = grad_scores.new_zeros(x_shape, dtype=x_dtype)
            draws = _OffsetMasks(mask if has_mask else None, seed, p, grad_x, s)
            for a, bb in _offsets(s):
                out_rows, out_cols, in_rows, in_cols = _window_overlap(a, bb, s, h, w)
                g = grad_z[:, :, a, bb, None, None].to(x_dtype)
                region = grad_x[:, :, in_rows, in_cols]
                keep = draws.keep(a, bb)
                if keep is None:
                    region += g
                else:
                    region.addcmul_(keep[:, :, out_rows, out_cols], g)
        if ctx.needs_input_grad[1]:
            grad_w = torch.einsum("nk,ncab->kcab", grad_scores, z * taps)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_scores.sum(0)
        return grad_x, grad_w, grad_b, None, None, None, None


def _window_overlap(a: int, b: int, s: int, h: int, w: int) -> tuple[slice, slice, slice, slice]:
    """Where offset (a, b) of every window lands inside the (unpadded) map.

    Output cell (i, j) reads x[i + a - r, j + b - r]; cells whose read falls in
    the zero padding contribute nothing, so only the overlap is visited.
    """
    r = s // 2
    da, db = a - r, b - r
    out_rows = slice(max(0, -da), min(h, h - da))
    out_cols = slice(max(0, -db), min(w, w - db))
    in_rows = slice(max(0, da), min(h, h + da))
    in_cols = slice(max(0, db), min(w, w + db))
    return out_rows, out_cols, in_rows, in_cols


class _OffsetMasks:
    """Each offset's keep-mask, one at a time, in one buffer the size of x.

    The centre of every block is always kept (FickleNet Sec. 3.2) and draws no
    random numbers; the other offsets are drawn in row-major order in float32,
    exactly as :meth:`FickleHead.sample_mask` draws them.
    """

    def __init__(
        self, mask: Tensor | None, seed: int | None, p: float, like: Tensor, s: int
    ) -> None:
        self.mask, self.p, self.s, self.r = mask, p, s, s // 2
        self.shape = tuple(like.shape)
        self.dtype = like.dtype
        self.generator = _generator(seed, like.device)
        self.buffer = None
        if mask is not None or self.generator is not None:
            self.buffer = torch.empty(self.shape, dtype=torch.float32, device=like.device)

    def keep(self, a: int, b: int) -> Tensor | None:
        """Offset (a, b)'s keep-mask as 0/1 in x's dtype (a scratch tensor the
        caller may overwrite), or None for "keep everything"."""
        if (a == self.r and b == self.r) or self.buffer is None:
            return None
        if self.mask is not None:
            self.buffer.copy_(self.mask[:, :, a :: self.s, b :: self.s])
        else:
            torch.rand(self.shape, generator=self.generator, out=self.buffer)
            self.buffer.ge_(self.p)
        return self.buffer.to(self.dtype)


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class FickleHead(nn.Module):
    """Classifier head of FickleNet (contract in docs/design.md, "Contracts").

    Args:
        in_channels: channels C of the backbone feature map.
        num_classes: K foreground classes (20 for VOC).
        kernel_size: s, odd; the window each score sees. The paper uses 9 on a
            41×41 VGG16 map (recalled, see docs/method.md).
        p: dropout rate in [0, 1). 0 is the deterministic baseline.
        dropout: ``"fickle"`` — centre-preserving spatial dropout on the
            expanded map; ``"general"`` — plain dropout on ``x`` before an
            ordinary s×s conv (the "general dropout" baseline of Table 5).
        scale_centre: also scale the always-kept centre of every window by
            1/(1-p) (kept off-centre taps always are); ``fickle`` only.

    ``stochastic_inference`` (attribute, default False) makes the head sample
    masks in eval mode too, which is how localization maps are drawn.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        kernel_size: int = 9,
        p: float = 0.9,
        dropout: Dropout | str = Dropout.fickle,
        scale_centre: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"FickleHead kernel_size must be a positive odd number (a window needs a "
                f"centre), got {kernel_size}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.kernel_size = kernel_size
        self.p = check_rate(p, "FickleHead p")
        self.dropout = Dropout.parse(dropout, "FickleHead dropout")
        self.scale_centre = bool(scale_centre)
        self.stochastic_inference = False
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size, stride=kernel_size)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    @property
    def sampling(self) -> bool:
        """Whether a forward pass without an explicit mask draws a random one."""
        return self.p > 0 and (self.training or self.stochastic_inference)

    def tap_scales(self, masked: bool) -> Tensor:
        """(s, s) scale of each tap of a window (``fickle``).

        ``masked``: a dropout mask is applied, so kept off-centre taps are scaled by
        1/(1-p); otherwise (no mask) they weigh 1, their expectation over masks. The
        centre weighs 1/(1-p) with ``scale_centre``, else 1, in both cases.
        """
        s, r = self.kernel_size, self.kernel_size // 2
        inverse_keep = 1.0 / (1.0 - self.p)
        taps = torch.full((s, s), inverse_keep if masked else 1.0, dtype=torch.float64)
        taps[r, r] = inverse_keep if self.scale_centre else 1.0
        return taps

    def expand(self, x: Tensor) -> Tensor:
        """The literal expanded map (B, C, s·h, s·w); see :func:`expand`."""
        return expand(x, self.kernel_size)

    def mask_shape(self, x: Tensor) -> tuple[int, int, int, int]:
        """Shape of a mask for ``x``: the expanded layout for ``fickle``, x's own
        layout for ``general`` dropout."""
        b, c, h, w = x.shape
        if self.dropout == "general":
            return (b, c, h, w)
        s = self.kernel_size
        return (b, c, h * s, w * s)

    def sample_mask(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw a bool keep-mask for ``x`` (centre of every block kept).

        With ``generator`` seeded by ``seed`` this is exactly the mask that
        ``forward`` uses internally when it draws with that seed, so tests and
        visualisations can materialise it.
        """
        b, c, h, w = x.shape
        if self.dropout == "general":
            return torch.rand((b, c, h, w), generator=generator, device=x.device) >= self.p
        s, r = self.kernel_size, self.kernel_size // 2
        mask = torch.ones(self.mask_shape(x), dtype=torch.bool, device=x.device)
        for a, bb in _offsets(s):
            if a == r and bb == r:
                continue
            mask[:, :, a::s, bb::s] = _offset_keep(generator, (b, c, h, w), self.p, x.device)
        return mask

    def score_map(self, x: Tensor) -> Tensor:
        """Deterministic class score map (B, K, h, w): the expectation over masks
        of the map before pooling (CAM's map), an s×s conv whose mean over space
        is the eval-mode score."""
        r = self.kernel_size // 2
        weight = self.classifier.weight
        if self.dropout == "fickle":
            weight = weight * self.tap_scales(masked=False).to(weight)
        return F.conv2d(x, weight, self.classifier.bias, padding=r)

    def forward(self, x: Tensor, mask: Tensor | None = None, seed: int | None = None) -> Tensor:
        """Class scores (B, K) for feature map ``x`` (B, C, h, w).

        ``mask``: bool keep-mask (see :meth:`mask_shape`; batch 1 broadcasts).
        Under autocast the head computes in float32 and returns float32 scores.
        When None it is drawn (training or ``stochastic_inference``) from the
        generator seeded with ``seed`` — itself drawn from torch's global RNG
        when None, so ``torch.manual_seed`` makes runs repeatable — or is
        all-true (p == 0, or eval without stochastic inference).
        """
        if mask is not None and tuple(mask.shape[1:]) != self.mask_shape(x)[1:]:
            raise ValueError(
                f"FickleHead mask has shape {tuple(mask.shape)}, expected "
                f"(B or 1, {', '.join(map(str, self.mask_shape(x)[1:]))})"
            )
        if mask is not None and mask.dtype != torch.bool:
            raise TypeError(f"FickleHead mask must be a bool tensor, got {mask.dtype}")
        if torch.is_autocast_enabled(x.device.type):
            # Mixed precision: the head (a few percent of the network's work) runs in
            # float32, so its long spatial sums keep their precision; gradients flow
            # back to the half-precision features through the cast.
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x.float(), mask, seed)
        if self.dropout == "general":
            # Plain dropout on x itself, no centre preserved; identity in eval.
            if mask is None and self.sampling:
                gen = _generator(seed if seed is not None else _draw_seed(), x.device)
                mask = self.sample_mask(x, gen)
            if mask is not None:
                x = x * mask / (1.0 - self.p)
            return self.score_map(x).mean(dim=(2, 3))
        if mask is None and self.sampling:
            seed = seed if seed is not None else _draw_seed()
        else:
            seed = None
        if mask is not None and mask.shape[0] == 1 and x.shape[0] > 1:
            mask = mask.expand(x.shape[0], *mask.shape[1:])
        weight, bias = self.classifier.weight, self.classifier.bias
        taps = self.tap_scales(masked=mask is not None or seed is not None).to(x.device)
        return _FickleGAP.apply(x, weight, bias, taps, self.p, mask, seed)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
            f"kernel_size={self.kernel_size}, p={self.p}, dropout={self.dropout.value!r}, "
            f"scale_centre={self.scale_centre}"
        )


def _draw_seed() -> int:
    """A generator seed drawn from torch's global CPU RNG (seeded by
    ``torch.manual_seed`` / Lightning's ``seed_everything``)."""
    return int(torch.randint(0, 2**62, (1,)).item())
