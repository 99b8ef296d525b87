"""Image augmentations, as the two papers give them, scaled to any image size.

Every pipeline is a :class:`Augmentation` (data, not code), turned into a callable
``PIL.Image -> float tensor 3 x s x s`` by :func:`build_transform`. Sizes the papers give at
224 px are scaled to the run's size ``s``: the "scale to 256, crop 224" of ImageNet training
becomes "resize to round(s * 256 / 224), crop s"; Gaussian-blur sigmas (given in pixels at
224 px) are scaled by ``s / 224`` so a view is blurred by the same fraction of the image at
every size. At ``s = 224`` every value is the paper's.

Augmentations by name (``AUGMENTATIONS``; ``build_transform(name, s, train)``):

======================  =======================================================================
``a_stl_n``             A sec. 6.2 STL-N: ImageNet pipeline of ResNet [32]: 256x256, random
                        224 crop, horizontal flip p=0.5
``a_stl_m``             A sec. 6.2 STL-M (COVIDx): translation, rotation, horizontal flip and
                        intensity shift, each with p=0.5 (magnitudes from COVID-Net, see below)
``a_sstl_m``            A sec. 6.2 SSTL-M: "the same data augmentation scheme as in [26]", i.e.
                        MoCo v1's pipeline (the values of ``a_moco_v1``; default, see below)
``a_sstl_m_literal``    A sec. 6.2 SSTL-M as its next sentence words it: 256, random 224 crop,
                        then colour jitter, horizontal flip and grayscale, each with p=0.5
``a_finetune``          A sec. 6.2 fine-tuning: "the same" augmentation as SSTL-M, read
                        literally (the values of ``a_sstl_m_literal``)
``a_moco_v1``           A sec. 6.4 (Table 3) MoCo baseline "with the hyperparameters of [26]"
``a_simclr``            A sec. 6.4 (Table 3) SimCLR baseline "with the hyperparameters of [28]"
``b_supervised``        B sec. IV-B: random crop with scale 0.5, horizontal flip, colour jitter
                        of brightness and contrast 0.2 (random init and transfer training)
``b_moco_v2``           B sec. IV-E-2: MoCo v2 set (Self-Trans and LUNA self-supervision)
``eval``                A sec. 6.2 inference: resize to 256, centre 224 crop (``train`` ignored)
======================  =======================================================================

**SSTL-M: MoCo's scheme, not the literal sentence.** A sec. 6.2 says SSTL-M follows "the same
data augmentation scheme as in [26]" (MoCo v1) and then words it as a resize to 256 and a random
224 crop. Two such crops of one image are shifted by at most 32 px each way and share about 90%
of their pixels (expected overlap), which makes the two views of a contrastive pair nearly the
same image; MoCo's own scheme (random resized crop of area (0.2, 1), grayscale, colour jitter,
flip) is what [26] uses and what the sentence cites, so it is ``a_sstl_m``'s default. The literal
pipeline is kept as ``a_sstl_m_literal``. Fine-tuning keeps the literal crop (``a_finetune``).

**Regions (A's region task).** :class:`RegionViews` turns an image into its five lobe regions
for A's region MoCo: each region gets a random resized crop whose size and aspect ratio do not
depend on the region (:func:`covtl.regions.random_region_boxes`), then the augmentation's photometric
steps (colour jitter, grayscale, blur), as A sec. 6.2 treats the regions like the images. No
horizontal flip: a flipped right-lung crop looks like a left-lung one, which would contradict
the side the region label encodes.

With ``train=False`` an augmentation gives its paper's evaluation transform: A's (resize to 256,
centre 224 crop, sec. 6.2) or B's (the whole CT image resized to 224x224, sec. IV-A; the
official code's ``val_transformer`` is ``Resize((224, 224))``).

Every pipeline starts with the same deterministic resize that :mod:`covtl.data.cache` stores
(:func:`covtl.data.cache.resize_image`), and that step is a no-op on an image that already
has its size, so ``transform(cache[i])`` equals ``transform(load_image(path))`` exactly under
the same seed when the cache was built with :func:`cache_spec`'s size and method.

Normalisation is ImageNet's per-channel mean and std for every augmentation (the networks start
from ImageNet weights or are compared with ones that do). B's official code instead uses the
COVID19-CT train-set statistics (mean 0.4527, std 0.3317 on every channel); that is a
difference of a fixed affine map of the input, recorded here, not reproduced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import v2

from ..regions import crop_regions, lung_box, random_region_boxes
from .cache import RESIZE_METHODS, resize_image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MIN_IMAGE_SIZE",
    "AUGMENTATIONS",
    "BaseResize",
    "Augmentation",
    "RegionViews",
    "ToNormalizedTensor",
    "TwoCrops",
    "build_region_views",
    "build_transform",
    "build_two_crops",
    "cache_spec",
    "normalize",
]

#: ImageNet per-channel statistics (torchvision's ImageNet weights were trained with these)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the smallest image size a pipeline accepts (a random crop of fewer pixels means nothing)
MIN_IMAGE_SIZE = 16
#: the reference size at which the papers give their pixel values
_PAPER_SIZE = 224


@dataclass(frozen=True)
class Augmentation:
    """One augmentation pipeline, as data. Pixel sizes are at the papers' 224 px.

    Geometric steps run first (crop, translation, rotation, flip), then photometric ones
    (colour jitter and grayscale in the source's order, then blur). Flip commutes with every
    photometric step, so this order gives the same distribution as each source's listed order.
    """

    source: str  # where the values come from (paper and section)
    resize: str = "square"  # the deterministic first resize: "square" or "center_crop"
    resize_at_224: int = 256  # its size at 224 px input (256: A's and B's code; 224: none)
    crop: str = "random"  # training crop: "random" (fixed size), "random_resized" or "none"
    crop_scale: tuple[float, float] = (0.08, 1.0)  # area range of "random_resized"
    eval_resize: str = "square"  # evaluation resize method
    eval_resize_at_224: int = 256  # evaluation resize size; a centre crop to s follows
    translate: float = 0.0  # max translation, fraction of the image side
    p_translate: float = 0.0
    rotate: float = 0.0  # max rotation, degrees
    p_rotate: float = 0.0
    p_flip: float = 0.0  # horizontal flip
    jitter: tuple[float, float, float, float] | None = None  # brightness, contrast, saturation, hue
    p_jitter: float = 0.0
    p_gray: float = 0.0
    gray_before_jitter: bool = False  # MoCo v1's order (grayscale, then jitter)
    blur_sigma: tuple[float, float] | None = None  # Gaussian blur sigma range, pixels at 224 px
    p_blur: float = 0.0


# A sec. 6.2: "each image is scaled to 256x256 and a patch of size 224x224 is randomly cropped
# [...] Horizontal flip is randomly performed [...] with a probability of 0.5" (pipeline of [32]).
_A_STL_N = Augmentation(source="Liu & Ji 2021 (A), sec. 6.2, STL-N", p_flip=0.5)

# A sec. 6.2: STL-M on COVIDx: "translation, rotation, horizontal flip, intensity shift. All
# the techniques are randomly performed with a probability of 0.5". A gives no magnitudes; we
# take COVID-Net's (Wang et al. 2020, the COVIDx authors, ref. [7] of A; lindawangg/COVID-Net
# data.py): shift 0.1 of the side, rotation 10 degrees, brightness factor 0.9-1.1; and its
# preprocessing, a centre square crop resized to the input size.
_A_STL_M = Augmentation(
    source="Liu & Ji 2021 (A), sec. 6.2, STL-M; magnitudes from COVID-Net (Wang et al. 2020)",
    resize="center_crop", resize_at_224=224, crop="none",
    eval_resize="center_crop", eval_resize_at_224=224,
    translate=0.1, p_translate=0.5, rotate=10.0, p_rotate=0.5, p_flip=0.5,
    jitter=(0.1, 0.0, 0.0, 0.0), p_jitter=0.5,
)

# A sec. 6.2: SSTL-M "follow[s] the same data augmentation scheme as in [26]. [...] scaled to
# 256 and a patch with spatial sizes 224 is randomly cropped [...] Then color jittering,
# horizontal flip, and grayscale conversion are performed randomly with a probability of 0.5."
# The literal reading: A gives no jitter strength; [26] (MoCo v1, He et al. 2020) uses
# ColorJitter(0.4, 0.4, 0.4, 0.4). Its two views nearly coincide (module docstring).
_A_SSTL_M_LITERAL = Augmentation(
    source="Liu & Ji 2021 (A), sec. 6.2, SSTL-M as worded; jitter strength from MoCo v1 [26]",
    p_flip=0.5, jitter=(0.4, 0.4, 0.4, 0.4), p_jitter=0.5, p_gray=0.5,
)

# A sec. 6.2: fine-tuning on COVID19-CT: "The data augmentation scheme is also the same during
# training. During inference, the center-cropped patch with size 224 for each image is used".
# Read literally (256, random 224 crop): the values of _A_SSTL_M_LITERAL.
_A_FINETUNE = Augmentation(
    source="Liu & Ji 2021 (A), sec. 6.2, fine-tuning (same as SSTL-M, as worded)",
    p_flip=0.5, jitter=(0.4, 0.4, 0.4, 0.4), p_jitter=0.5, p_gray=0.5,
)

# A sec. 6.2 and 6.4 (Table 3): the MoCo baseline uses "the same hyperparameters as used in
# [its] paper [26]": MoCo v1 (He et al. 2020, sec. 4 and its main_moco.py): random resized crop
# with area (0.2, 1), grayscale p=0.2, ColorJitter(0.4, 0.4, 0.4, 0.4), horizontal flip.
_A_MOCO_V1 = Augmentation(
    source="Liu & Ji 2021 (A), sec. 6.2/6.4: MoCo v1 baseline, values of He et al. 2020 [26]",
    crop="random_resized", crop_scale=(0.2, 1.0),
    p_flip=0.5, jitter=(0.4, 0.4, 0.4, 0.4), p_jitter=1.0, p_gray=0.2, gray_before_jitter=True,
)

# A sec. 6.2: SSTL-M follows "the same data augmentation scheme as in [26]": MoCo v1's pipeline
# (the default; the module docstring says why the literal sentence is not).
_A_SSTL_M = dataclasses.replace(
    _A_MOCO_V1, source="Liu & Ji 2021 (A), sec. 6.2, SSTL-M: the scheme of [26] (MoCo v1, He et al. 2020)"
)

# A sec. 6.2 and 6.4 (Table 3): the SimCLR baseline with the values of [28] (Chen et al. 2020,
# appendix A): random resized crop (0.08, 1), flip, colour distortion of strength 1 =
# ColorJitter(0.8, 0.8, 0.8, 0.2) with p=0.8, grayscale p=0.2, Gaussian blur sigma (0.1, 2.0)
# with p=0.5 (kernel 10% of the image side).
_A_SIMCLR = Augmentation(
    source="Liu & Ji 2021 (A), sec. 6.2/6.4: SimCLR baseline, values of Chen et al. 2020 [28]",
    crop="random_resized", crop_scale=(0.08, 1.0),
    p_flip=0.5, jitter=(0.8, 0.8, 0.8, 0.2), p_jitter=0.8, p_gray=0.2,
    blur_sigma=(0.1, 2.0), p_blur=0.5,
)

# B sec. IV-B: "random cropping with a scale of 0.5 and horizontal flip. Color jittering is also
# applied with random contrast and random brightness with a factor of 0.2." The official code
# (UCSD-AI4H/COVID-CT, Self-Trans/CT-predict-pretrain.py) is Resize(256),
# RandomResizedCrop(224, scale=(0.5, 1.0)), RandomHorizontalFlip(), ColorJitter(0.2, 0.2);
# evaluation is Resize((224, 224)) (B sec. IV-A: "The CT images were resized to 224x224").
_B_SUPERVISED = Augmentation(
    source="He et al. 2020 (B), sec. IV-B and its official code",
    crop="random_resized", crop_scale=(0.5, 1.0),
    eval_resize="square", eval_resize_at_224=224,
    p_flip=0.5, jitter=(0.2, 0.2, 0.0, 0.0), p_jitter=1.0,
)

# B sec. IV-E-2: "random horizontal flip, random cropping with a size of 0.2 in area, random color
# jittering such as random brightness with a ratio of 0.4, random contrast of 0.4, random
# saturation of 0.4, random hue of 0.1, Gaussian blur, and random gray-scale conversion" --
# MoCo v2's set (Chen et al. 2020, arXiv:2003.04297), whose probabilities are jitter p=0.8,
# grayscale p=0.2, blur p=0.5 with sigma (0.1, 2.0).
_B_MOCO_V2 = Augmentation(
    source="He et al. 2020 (B), sec. IV-E-2; probabilities of MoCo v2 (Chen et al. 2020)",
    crop="random_resized", crop_scale=(0.2, 1.0),
    eval_resize="square", eval_resize_at_224=224,
    p_flip=0.5, jitter=(0.4, 0.4, 0.4, 0.1), p_jitter=0.8, p_gray=0.2,
    blur_sigma=(0.1, 2.0), p_blur=0.5,
)

# A sec. 6.2: "During inference, the center-cropped patch with size 224 for each image is used".
_EVAL = Augmentation(source="Liu & Ji 2021 (A), sec. 6.2, inference", crop="none")

#: every augmentation, by name
AUGMENTATIONS: dict[str, Augmentation] = {
    "a_stl_n": _A_STL_N,
    "a_stl_m": _A_STL_M,
    "a_sstl_m": _A_SSTL_M,
    "a_sstl_m_literal": _A_SSTL_M_LITERAL,
    "a_finetune": _A_FINETUNE,
    "a_moco_v1": _A_MOCO_V1,
    "a_simclr": _A_SIMCLR,
    "b_supervised": _B_SUPERVISED,
    "b_moco_v2": _B_MOCO_V2,
    "eval": _EVAL,
}
_ALWAYS_EVAL = ("eval",)


class BaseResize:
    """The deterministic first step: :func:`covtl.data.cache.resize_image` to ``size``.

    An image that already has ``size x size`` pixels (e.g. from a decoded cache built with
    the same size and method) is passed through unchanged. Non-RGB input is converted to RGB
    so every pipeline returns three channels.
    """

    def __init__(self, size: int, method: str = "square") -> None:
        if method not in RESIZE_METHODS:
            raise ValueError(f"unknown resize method {method!r}; choose one of {RESIZE_METHODS}")
        self.size, self.method = size, method

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return resize_image(image, self.size, self.method)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, method={self.method!r})"


class TwoCrops:
    """Two independent views of one image: ``(query, key)`` for MoCo-style contrastive learning.

    As ``TwoCropsTransform`` of MoCo (He et al. 2020): the same random ``transform`` is applied
    twice; A sec. 5.2 ("two sets of random augmentations are applied on the same image") and
    B sec. III-C (``x_q`` and ``x_k``) both use it.
    """

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(image), self.transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


def _check(name: str, image_size: int) -> Augmentation:
    """The augmentation ``name``, after validating ``name`` and ``image_size``."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTATIONS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an int >= {MIN_IMAGE_SIZE} (pixels of the square network input), "
            f"got {image_size!r}"
        )
    return AUGMENTATIONS[name]


def _scaled(pixels_at_224: float, image_size: int) -> int:
    """A size the papers give at 224 px, at ``image_size`` px: round(pixels * s / 224)."""
    return max(1, round(pixels_at_224 * image_size / _PAPER_SIZE))


def cache_spec(name: str, image_size: int, train: bool = True) -> tuple[int, str]:
    """``(size, resize method)`` of the first step of ``build_transform(name, image_size, train)``.

    Build a :class:`covtl.data.cache.DecodedCache` with these and the pipeline's first step
    is a no-op on cached images, so cached and uncached runs see the same pixels.
    """
    aug = _check(name, image_size)
    if train and name not in _ALWAYS_EVAL:
        return _scaled(aug.resize_at_224, image_size), aug.resize
    return _scaled(aug.eval_resize_at_224, image_size), aug.eval_resize


_MEAN = torch.tensor(IMAGENET_MEAN).view(-1, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(-1, 1, 1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation per channel of float images ``... x 3 x H x W`` (one or a stack).

    torchvision's ``Normalize`` arithmetic (minus the mean, then divided by the std), bit for bit,
    in one call for any number of images.
    """
    return x.sub(_MEAN).div(_STD)


class ToNormalizedTensor:
    """PIL image -> float tensor ``3 x H x W`` in [0, 1], then ImageNet-normalised (per channel).

    torchvision's ``ToImage``, ``ToDtype(float32, scale=True)`` and ``Normalize`` in one call: the
    same operations in the same order (uint8 -> float32, times 1/255, then :func:`normalize`), so
    the same values bit for bit, without three transforms' dispatch. At the study's 64-128 px
    that dispatch cost more than the arithmetic: 0.27 -> 0.10 ms per 64 px view, 0.36 -> 0.19 ms
    at 128 px on this project's CPU (``bench/data.py`` prints the figures).

    Args:
        normalize: False stops at [0, 1] (A's region task normalises its crops together).
    """

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"{type(self).__name__} takes a PIL image, got {type(image).__name__}")
        x = v2.functional.pil_to_tensor(image).to(torch.float32).mul_(1.0 / 255)
        return normalize(x) if self.normalize else x

    def __repr__(self) -> str:
        return f"{type(self).__name__}(normalize={self.normalize})"


def _crop(aug: Augmentation, s: int) -> list:
    if aug.crop == "random":
        return [v2.RandomCrop(s)]
    if aug.crop == "random_resized":
        return [v2.RandomResizedCrop(s, scale=aug.crop_scale, antialias=True)]
    return [v2.CenterCrop(s)]  # "none": a no-op when the resize already gave s x s


def _geometric(aug: Augmentation) -> list:
    steps = []
    if aug.translate:
        affine = v2.RandomAffine(degrees=0.0, translate=(aug.translate, aug.translate))
        steps += _maybe(affine, aug.p_translate)
    if aug.rotate:
        steps += _maybe(v2.RandomRotation(aug.rotate), aug.p_rotate)
    if aug.p_flip:
        steps.append(v2.RandomHorizontalFlip(p=aug.p_flip))
    return steps


def _maybe(step, p: float) -> list:
    """``[step]`` applied with probability ``p`` (no wrapper, no random draw, when p = 1)."""
    if p <= 0:
        return []
    return [step] if p >= 1 else [v2.RandomApply([step], p=p)]


def _photometric(aug: Augmentation, s: int) -> list:
    steps = _maybe(v2.ColorJitter(*aug.jitter), aug.p_jitter) if aug.jitter else []
    if aug.p_gray:
        gray = [v2.RandomGrayscale(p=aug.p_gray)]
        steps = gray + steps if aug.gray_before_jitter else steps + gray
    if aug.blur_sigma and aug.p_blur:
        kernel = 2 * round(0.05 * s) + 1  # odd, ~10% of the side (SimCLR appendix A: 23 at 224)
        sigma = tuple(x * s / _PAPER_SIZE for x in aug.blur_sigma)
        steps += _maybe(v2.GaussianBlur(kernel, sigma=sigma), aug.p_blur)
    return steps


def build_transform(name: str, image_size: int, train: bool = True) -> Callable[[Image.Image], torch.Tensor]:
    """The transform of ``name`` at ``image_size``: PIL image -> float tensor ``3 x s x s``.

    Args:
        name: one of :data:`AUGMENTATIONS` (see the module docstring for the paper sections).
        image_size: side ``s`` of the square network input, >= :data:`MIN_IMAGE_SIZE`.
        train: the random training augmentation (True) or the augmentation's deterministic
            evaluation transform (False). The ``"eval"`` augmentation is always deterministic.

    Randomness comes from torch's global generator, so ``torch.manual_seed`` makes a
    pipeline repeatable (DataLoader workers seed it per worker).

    Raises:
        ValueError: an unknown augmentation (the message lists the valid ones) or a bad size.
    """
    aug = _check(name, image_size)
    size, method = cache_spec(name, image_size, train)
    steps: list = [BaseResize(size, method)]
    if train and name not in _ALWAYS_EVAL:
        steps += _crop(aug, image_size) + _geometric(aug) + _photometric(aug, image_size)
    else:
        steps.append(v2.CenterCrop(image_size))
    return v2.Compose([*steps, ToNormalizedTensor()])


def build_two_crops(name: str, image_size: int) -> TwoCrops:
    """``TwoCrops`` of the training transform of ``name``: ``image -> (query, key)`` tensors.

    Meant for the contrastive augmentations (``a_sstl_m``, ``a_sstl_m_literal``, ``a_moco_v1``,
    ``a_simclr``, ``b_moco_v2``).
    """
    return TwoCrops(build_transform(name, image_size, train=True))


#: aspect-ratio range (width / height) of every region crop: RandomResizedCrop's default, the
#: same for all five regions (the regions' own shapes must not show through the resize)
REGION_RATIO = (3 / 4, 4 / 3)


class RegionViews:
    """PIL image -> 5 x 3 x s x s augmented lobe regions (ru, rm, rl, lu, ll): A's region task.

    The image goes through the augmentation's deterministic first resize (the image the two views are
    cropped from; a no-op on a decoded cache built with :func:`cache_spec`), the lungs are
    located on it, and each region is cut by a random resized crop
    (:func:`covtl.regions.random_region_boxes`) and resized to ``s x s``. The crop follows the
    augmentation's image crop: ``random_resized`` uses its area range, a fixed-size ``random`` crop a
    square of the same area fraction (``(s / resize) ** 2``), ``none`` the mean region area.
    Then each crop gets its own draw of the augmentation's photometric steps (colour jitter,
    grayscale, blur), and ImageNet normalisation. Randomness comes from torch's global
    generator, like :func:`build_transform`.
    """

    def __init__(self, name: str, image_size: int) -> None:
        aug = _check(name, image_size)
        if name in _ALWAYS_EVAL:
            raise ValueError(f"region views need a training augmentation, got {name!r}")
        self.size = image_size
        self.base = BaseResize(*cache_spec(name, image_size, train=True))
        if aug.crop == "random_resized":
            self.scale, self.ratio = aug.crop_scale, REGION_RATIO
        elif aug.crop == "random":
            fraction = (image_size / self.base.size) ** 2
            self.scale, self.ratio = (fraction, fraction), (1.0, 1.0)
        else:
            self.scale, self.ratio = (1.0, 1.0), (1.0, 1.0)
        self.photometric = v2.Compose(_photometric(aug, image_size))
        self.to_tensor = ToNormalizedTensor(normalize=False)  # PIL -> float in [0, 1]

    def sample(self, image: Image.Image) -> tuple[torch.Tensor, dict[str, tuple[int, int, int, int]]]:
        """The 5 x 3 x s x s regions and the boxes (top, left, bottom, right) they were cut from.

        Box pixels are in the resized image (``self.base.size`` square).
        """
        x = self.to_tensor(self.base(image))  # 3 x S x S in [0, 1]
        _, h, w = x.shape
        boxes = random_region_boxes(lung_box(x.numpy()), h, w, scale=self.scale, ratio=self.ratio)
        crops = crop_regions(x, self.size, boxes=boxes)  # 5 x 3 x s x s
        crops = normalize(torch.stack([self.photometric(c) for c in crops]))
        return crops, boxes

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.sample(image)[0]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, base={self.base!r}, scale={self.scale}, "
                f"ratio={self.ratio}, photometric={self.photometric!r})")


def build_region_views(name: str, image_size: int) -> RegionViews:
    """:class:`RegionViews` of the training pipeline of ``name``: image -> 5 x 3 x s x s regions."""
    return RegionViews(name, image_size)
