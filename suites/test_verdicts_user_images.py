"""The verdict rule on private images giacheck does not bundle, supplied as a user ImageFolder (``--data``).

The positive control and one negative must give the same verdicts on images the project never looked at as on
its bundled challenge set: re-identification against a held-out pool drawn from the user's own other images,
no threshold tuned on any of them. The folder is built from image files that ship inside installed packages
but are not among giacheck's bundled samples: matplotlib's sample data (Grace Hopper's portrait, a present box,
its logo) and scikit-image's chessboard, brick and gravel textures. A user source's challenge set is its first
images in source order (here Grace Hopper and the present box), under the profile's seeds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
from pathlib import Path

import pytest
from _claims import CONTROL_32, S

from giacheck.specs import RunOptions

FILES = [("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
         ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
         ("matplotlib", "mpl-data/sample_data/logo2.png"),
         ("skimage", "data/chessboard_RGB.png"),
         ("skimage", "data/brick.png"),
         ("skimage", "data/gravel.png")]


@pytest.fixture(scope="module")
def user_images(tmp_path_factory: pytest.TempPathFactory) -> RunOptions:
    """The folder, at one path for every xdist worker of the run (so that each case is computed once)."""
    shared = tmp_path_factory.getbasetemp().parent / "user_images"
    if not shared.is_dir():
        staging = tmp_path_factory.mktemp("staging")
        for i, (package, rel) in enumerate(FILES):
            spec = importlib.util.find_spec(package)
            assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
            source = Path(next(iter(spec.submodule_search_locations))) / rel
            folder = staging / f"{i}_{Path(rel).stem.lower()}"
            folder.mkdir()
            shutil.copy(source, folder / Path(rel).name)
        with contextlib.suppress(OSError):  # another worker renamed its copy first: the same files
            staging.rename(shared)
    return RunOptions(data=f"imagefolder:{shared}")


def test_control_is_reidentified_on_user_images(gia, user_images: RunOptions) -> None:
    gia.feasible(CONTROL_32, options=user_images)


def test_training_mode_update_is_infeasible_on_user_images(gia, user_images: RunOptions) -> None:
    gia.infeasible(f"resnet18_cifar-32-bn_train-bs1-stats_none{S}", control=CONTROL_32, needs="attack-limited",
                   options=user_images)
