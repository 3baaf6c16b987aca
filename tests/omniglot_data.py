"""Where the tests find the Omniglot files: ../shared/omniglot beside the repository."""

from pathlib import Path

import pytest

OMNIGLOT = Path(__file__).resolve().parents[1].parent / "shared" / "omniglot"
needs_omniglot = pytest.mark.skipif(not (OMNIGLOT / "images_background_small1.zip").is_file(),
                                    reason=f"the Omniglot zips are not at {OMNIGLOT}")
