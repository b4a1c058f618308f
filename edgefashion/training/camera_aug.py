"""Camera-domain augmentation (`--augment camera`): make a product shot look like a webcam frame.

clothing-small's photos are garments laid out on a bed, a floor or a door, filling the picture; a camera sees a
garment held up in front of a room, smaller, off-centre, under other light, blurred and noisy. For a share of
each batch (`P_COMPOSITE`) the garment is cut out of its photo (data.scene.garment_mask: GrabCut, computed once
per image and cached by content) and composited, at 40-100% of the frame's height and up to 15% off-centre, onto
a background: a crop of one of the TRAINING background photographs (edgefashion/backgrounds/train/; the
calibration and held-out sets are never used here), recoloured or joined to another scene some of the time, or
a crop of the border of another training photo of the batch (a bed, a floor: the photo's own background, where
its garment is absent). The rest of the batch gets today's `strong` geometry.
Then every image goes through camera conditions: exposure gain and offset, a colour cast, defocus or motion blur,
sensor noise and JPEG re-compression, and the `strong` colour jitter; random erasing follows normalisation (in
datasets.batch_to_input).

Everything but the JPEG step is batched torch on the training device; JPEG is OpenCV on the CPU (~0.1 ms per
96 px image). Every random draw comes from the epoch's generator, so a resumed run augments exactly as an
uninterrupted one (the matte cache holds only deterministic results).
"""
from __future__ import annotations

import hashlib
import math
from typing import Dict, Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data import scene

P_COMPOSITE = 0.7  # the rest keeps the product shot: the test split and photos still need to score
P_PHOTO_BG = 0.75  # else the border of another training photo
HEIGHT = (0.4, 1.0)  # the garment's share of the frame's height
OFFSET = 0.15  # of the frame's size, each way
ROTATE = 8.0  # degrees
POOL_PER_PHOTO = 64  # background crops per training background photograph
# A few dozen scenes are few: a model learns them by heart, and is sure of itself in front of a scene it has not
# seen. Each scene crop is recoloured (its colour channels permuted: a blue sky turns orange, a green field
# purple) or joined to a crop of another scene along a random straight edge, so the backgrounds a batch shows
# are many more than the photographs.
P_BG_RECOLOUR = 0.5
P_BG_COLLAGE = 0.3
_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
NOISE_BANK = 256
KERNEL = 7  # blur kernel side at the model's input size (96 px: a 7 px streak is a fast hand)


class MatteCache:
    """Garment mattes by image content: the training loop hands batches of pixels, not indices, and GrabCut
    (~25 ms at 96 px) must run once per photo, not once per epoch."""

    def __init__(self) -> None:
        self._mattes: Dict[bytes, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._mattes)

    def get(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, S, S) -> float (N, 1, S, S) mattes on xb's device."""
        arr = xb.detach().cpu().numpy()
        out = np.empty((arr.shape[0], 1) + arr.shape[2:], np.float32)
        for i, img in enumerate(arr):
            key = hashlib.blake2b(img.tobytes(), digest_size=16).digest()
            m = self._mattes.get(key)
            if m is None:
                hwc = np.ascontiguousarray(img.transpose(1, 2, 0))
                m = self._mattes[key] = scene.garment_mask(hwc if hwc.shape[2] == 3 else hwc[:, :, 0])
            out[i, 0] = m
        return torch.from_numpy(out).to(xb.device)


class CameraAugment:
    """The augmentation's state: the matte cache and the background crops (built once, from a fixed seed)."""

    def __init__(self) -> None:
        self.mattes = MatteCache()
        self._pool: Dict[tuple, torch.Tensor] = {}
        self._noise: Dict[tuple, torch.Tensor] = {}

    def noise(self, shape: tuple, device) -> torch.Tensor:
        """A bank of unit Gaussian noise fields (NOISE_BANK, C, H, W), drawn once from a fixed seed: drawing
        fresh normals for every pixel of every batch costs more on a CPU than the rest of this augmentation."""
        key = (tuple(shape), str(device))
        if key not in self._noise:
            gen = torch.Generator().manual_seed(1617)
            self._noise[key] = torch.randn((NOISE_BANK, *shape), generator=gen).to(device)
        return self._noise[key]

    def pool(self, size: int, chans: int, device) -> torch.Tensor:
        """float (P, C, size, size) crops of the training background photographs, in the model's colour order."""
        key = (size, chans, str(device))
        if key not in self._pool:
            rng = np.random.default_rng(1616)
            tiles = []
            for bg in scene.backgrounds("train"):
                h, w = bg.shape[:2]
                for _ in range(POOL_PER_PHOTO):
                    side = int(min(h, w) * rng.uniform(0.25, 1.0))
                    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                    t = cv2.resize(bg[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
                    t = cv2.cvtColor(t, cv2.COLOR_BGR2RGB) if chans == 3 else cv2.cvtColor(t, cv2.COLOR_BGR2GRAY)[..., None]
                    tiles.append(t)
            arr = np.stack(tiles).transpose(0, 3, 1, 2)
            arr = np.concatenate([arr, arr[:, :, :, ::-1]])  # mirrored too: no flip per batch
            self._pool[key] = torch.from_numpy(np.ascontiguousarray(arr)).to(device).float() / 255.0
        return self._pool[key]


_STATE: Optional[CameraAugment] = None


def state() -> CameraAugment:
    global _STATE
    if _STATE is None:
        _STATE = CameraAugment()
    return _STATE


def _u(n: int, lo: float, hi: float, g: torch.Generator, dev) -> torch.Tensor:
    return torch.rand(n, generator=g, device=dev) * (hi - lo) + lo


def _warp(x: torch.Tensor, theta: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """grid_sample through the affine `theta` (N, 2, 3), as F.affine_grid(align_corners=False) would build the
    grid, but by broadcasting: affine_grid's batched matmul over a (N, H*W, 3) base grid was a third of this
    augmentation's time on a CPU."""
    n, _, h, w = x.shape
    xs = ((torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1).view(1, 1, w)
    ys = ((torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1).view(1, h, 1)
    t = theta.to(x.dtype).view(n, 6, 1, 1)
    gx = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
    gy = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode=padding, align_corners=False)


def _place(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The garment (and its matte, channel -1) shrunk to 40-100% of the frame, moved up to 15% off-centre,
    rotated a little and mirrored half the time; outside the photo the matte is 0."""
    n, dev = x.shape[0], x.device
    z = 1.0 / _u(n, *HEIGHT, g, dev)  # output -> input scale: > 1 makes the garment smaller
    th = _u(n, -ROTATE, ROTATE, g, dev) * (math.pi / 180)
    flip = torch.where(torch.rand(n, generator=g, device=dev) < 0.5, -1.0, 1.0)
    ox, oy = _u(n, -2 * OFFSET, 2 * OFFSET, g, dev), _u(n, -2 * OFFSET, 2 * OFFSET, g, dev)
    c, s = torch.cos(th) * z, torch.sin(th) * z
    # input = A (output - o): the garment's centre lands at o
    a11, a12, a21, a22 = c * flip, -s, s * flip, c
    theta = torch.stack([torch.stack([a11, a12, -(a11 * ox + a12 * oy)], 1),
                         torch.stack([a21, a22, -(a21 * ox + a22 * oy)], 1)], 1)
    return _warp(x, theta)


def _vary_scenes(bg: torch.Tensor, pool: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Background crops (N, C, S, S) recoloured and joined to other scenes (P_BG_RECOLOUR, P_BG_COLLAGE)."""
    n, c, s, _ = bg.shape
    dev = bg.device
    if c == 3:
        perms = torch.tensor(_PERMUTATIONS, device=dev)
        which = torch.randint(1, len(_PERMUTATIONS), (n,), generator=g, device=dev)
        on = torch.rand(n, generator=g, device=dev) < P_BG_RECOLOUR
        order = torch.where(on[:, None], perms[which], perms[0])
        bg = torch.gather(bg, 1, order[:, :, None, None].expand(-1, -1, s, s))
    other = pool[torch.randint(0, pool.shape[0], (n,), generator=g, device=dev)]
    # A straight edge through a random point at a random angle: one side keeps the scene, the other is another.
    ang = _u(n, 0, 2 * math.pi, g, dev)[:, None, None]
    px, py = _u(n, -0.5, 0.5, g, dev)[:, None, None], _u(n, -0.5, 0.5, g, dev)[:, None, None]
    coords = (torch.arange(s, device=dev, dtype=bg.dtype) + 0.5) / s - 0.5
    side = ((coords.view(1, 1, s) - px) * torch.cos(ang) + (coords.view(1, s, 1) - py) * torch.sin(ang)) > 0
    join = (torch.rand(n, generator=g, device=dev) < P_BG_COLLAGE)[:, None, None] & side
    return torch.where(join[:, None], other, bg)


def _border_crops(x: torch.Tensor, alpha: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
    """For each image, the corner third of ANOTHER image of the batch (its reverse partner) where that
    partner's garment is least present, enlarged to the full size; and whether that corner is really garment-
    free (else the caller takes a photograph crop)."""
    n, c, h, w = x.shape
    px, pa = x.flip(0), alpha.flip(0)
    k = max(2, h // 3)
    corners = [(slice(0, k), slice(0, k)), (slice(0, k), slice(w - k, w)), (slice(h - k, h), slice(0, k)),
               (slice(h - k, h), slice(w - k, w))]
    cover = torch.stack([pa[:, 0, ys, xs].mean((1, 2)) for ys, xs in corners], 1)
    best, which = cover.min(1)
    patch = torch.stack([px[:, :, ys, xs] for ys, xs in corners], 1)[torch.arange(n, device=x.device), which]
    crops = F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False)
    return crops, best < 0.05


def _blur_kernels(n: int, g: torch.Generator, dev) -> "tuple[torch.Tensor, torch.Tensor]":
    """(n, K, K) kernels: identity, defocus (Gaussian, sigma 0.4-1.3 px) or motion (a 3-7 px streak at any
    angle), a third each; and which are not the identity."""
    r = KERNEL // 2
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1, device=dev, dtype=torch.float32),
                            torch.arange(-r, r + 1, device=dev, dtype=torch.float32), indexing="ij")
    kind = torch.randint(0, 3, (n,), generator=g, device=dev)
    sigma = _u(n, 0.4, 1.3, g, dev)[:, None, None]
    gauss = torch.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
    ang = _u(n, 0, math.pi, g, dev)[:, None, None]
    length = _u(n, 3, KERNEL, g, dev)[:, None, None]
    along = xx * torch.cos(ang) + yy * torch.sin(ang)
    perp = -xx * torch.sin(ang) + yy * torch.cos(ang)
    motion = (1 - perp.abs()).clamp(min=0) * (along.abs() <= length / 2)
    ident = ((xx == 0) & (yy == 0)).float().expand(n, -1, -1)
    k = torch.where((kind == 0)[:, None, None], ident, torch.where((kind == 1)[:, None, None], gauss, motion))
    return k / k.sum((1, 2), keepdim=True), kind != 0


def _jpeg(x: torch.Tensor, g: torch.Generator, p: float = 0.4) -> torch.Tensor:
    n = x.shape[0]
    on = (torch.rand(n, generator=g, device=x.device) < p).tolist()
    quality = torch.randint(25, 91, (n,), generator=g, device=x.device).tolist()
    if not any(on):
        return x
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = x.clone()
    for i in np.flatnonzero(on):
        img = arr[i][:, :, ::-1] if arr.shape[3] == 3 else arr[i][:, :, 0]  # OpenCV's JPEG expects BGR
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, int(quality[i])])
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        dec = dec[:, :, ::-1] if dec.ndim == 3 else dec[:, :, None]
        out[i] = torch.from_numpy(np.ascontiguousarray(dec.transpose(2, 0, 1))).to(x.device, x.dtype) / 255.0
    return out


def camera_conditions(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Exposure, white balance, blur, noise and JPEG on a [0, 1] batch."""
    n, c, h, w = x.shape
    dev = x.device
    gain = _u(n, 0.6, 1.3, g, dev)[:, None, None, None]
    offset = _u(n, -0.12, 0.1, g, dev)[:, None, None, None]
    cast = _u(n * c, 0.85, 1.15, g, dev).view(n, c, 1, 1) if c == 3 else torch.ones(n, 1, 1, 1, device=dev)
    x = (x * gain * cast + offset).clamp(0, 1)
    k, blurred = _blur_kernels(n, g, dev)
    r = KERNEL // 2
    bi = blurred.nonzero().flatten()
    if len(bi):  # a third of the batch keeps its focus: convolve only the rest
        m = len(bi)
        xp = F.pad(x[bi], (r, r, r, r), mode="replicate").reshape(1, m * c, h + 2 * r, w + 2 * r)
        x = x.clone()
        x[bi] = F.conv2d(xp, k[bi].repeat_interleave(c, 0)[:, None].to(x.dtype), groups=m * c).view(m, c, h, w)
    sigma = _u(n, 0.0, 0.04, g, dev)[:, None, None, None]
    bank = state().noise((c, h, w), dev)
    field = bank[torch.randint(0, bank.shape[0], (n,), generator=g, device=dev)]
    x = (x + sigma * field.to(x.dtype)).clamp(0, 1)
    return _jpeg(x, g)


def camera_augment(x: torch.Tensor, xb: torch.Tensor, g: torch.Generator, strong,
                   empty: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x: float [0, 1] (N, C, S, S), the batch xb (uint8) converted; `strong`: the strong geometric augmentation
    (datasets._affine with its settings) for the images that are not composited. `empty` (bool, N): images that
    become a background with no garment at all (the empty frames a camera sees between garments). Returns
    float [0, 1]."""
    n, c, s, _ = x.shape
    dev = x.device
    st = state()
    comp = torch.rand(n, generator=g, device=dev) < P_COMPOSITE
    if empty is not None:
        comp = comp | empty
    ci, si = comp.nonzero().flatten(), (~comp).nonzero().flatten()
    out = torch.empty_like(x)
    # Each half of the batch is warped once, by its own transform: grid_sample dominates the cost on a CPU.
    if len(si):
        out[si] = strong(x[si])
    if len(ci):
        xc = x[ci]
        alpha = st.mattes.get(xb[ci])
        placed = _place(torch.cat([xc, alpha], 1), g)
        fg, a = placed[:, :c], placed[:, c:]
        if empty is not None:
            a = a * (~empty[ci]).to(a.dtype)[:, None, None, None]
        pool = st.pool(s, c, dev)
        bg = _vary_scenes(pool[torch.randint(0, pool.shape[0], (len(ci),), generator=g, device=dev)], pool, g)
        if len(ci) > 1:
            crops, clean = _border_crops(xc, alpha)
            use_crop = (torch.rand(len(ci), generator=g, device=dev) >= P_PHOTO_BG) & clean
            bg = torch.where(use_crop[:, None, None, None], crops, bg)
        out[ci] = fg * a + bg * (1 - a)
    return camera_conditions(out, g)
