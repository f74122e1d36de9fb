"""The template subjects are not mirror images of themselves (asa.data.synthetic.anatomy): nilearn's
MNI152 2009a template is exactly its own left-right mirror, so a symmetry result on the generated
subjects means something only if each subject carries independent left and right deformations and
one-sided lesions."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nilearn")

from asa.data.synthetic.anatomy import (LESION_NAMES, _template_on_grid, make_anatomy_subject,  # noqa: E402
                                        mirror_correlation)

SIZE = 32


def test_the_template_is_its_own_mirror():
    tpl = _template_on_grid((SIZE,) * 3)
    brain = tpl["brain"] > 0.5
    assert round(mirror_correlation(tpl["t1"], brain), 6) == 1.0
    assert round(mirror_correlation(tpl["gm"], brain), 6) == 1.0
    assert mirror_correlation(tpl["t1"], brain, fit_plane=True) > 0.999999  # the best plane is the centre one


def test_a_subject_is_not_its_own_mirror_even_about_its_own_plane():
    """Measured at 32³, seed 0, subjects 0-2: T1 mirror correlation 0.40 / 0.55 / 0.64 about the grid's
    centre plane (the pose counts), 0.83 / 0.82 / 0.88 about each subject's best plane (the left and
    right deformations differ by about 4 mm RMS)."""
    for index in range(2):
        subject = make_anatomy_subject(SIZE, seed=0, index=index)
        t1, brain = subject.images["t1"], subject.brain_mask
        own_plane = mirror_correlation(t1, brain, fit_plane=True)
        assert own_plane < 0.92, (index, own_plane)
        assert mirror_correlation(t1, brain) <= own_plane + 1e-6  # the centre plane is one of the planes tried
        # the subject's hemispheres are the template's, warped: about half the brain each side
        left, right = (np.sum(subject.hemisphere == side) for side in (-1, 1))
        assert 0.4 < left / (left + right) < 0.6 and np.all((subject.hemisphere != 0) == brain)


def test_every_lesion_lies_in_one_hemisphere():
    for index in range(4):
        subject = make_anatomy_subject(SIZE, seed=0, index=index, lesions=True)
        sides = {}
        for value, name in LESION_NAMES.items():
            lesion = subject.labels == value
            assert lesion.any(), (index, name)
            hemispheres = set(np.unique(subject.hemisphere[lesion]).tolist())
            assert len(hemispheres) == 1 and 0 not in hemispheres, (index, name, hemispheres)
            sides[name] = hemispheres.pop()
        # every heterotopia nodule on one side (one draw of side per subject), the enlarged nuclei on the side drawn
        assert len({np.sign(c[0]) for c in subject.lesions["heterotopia"]}) == 1
        assert np.sign(subject.lesions["heterotopia"][0][0]) == sides["heterotopia"]
        assert sides["deep_grey_enlargement"] == (1 if subject.lesions["deep_grey_enlargement"] == "right" else -1)


def test_mirror_correlation_refuses_a_mask_of_another_shape():
    with pytest.raises(ValueError, match="mask of its shape"):
        mirror_correlation(np.ones((4, 4, 4)), np.ones((4, 4, 3), dtype=bool))
