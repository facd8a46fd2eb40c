"""Cinder's lock-name templates render exactly as cinder.coordination.synchronized renders them."""

from __future__ import annotations

import types

import pytest

from drivers_shim.names import call_arguments, render_names
from lockd.errors import UsageError


def delete_volume(self, volume, connector=None, **kwargs):  # noqa: ANN001 - the shape Cinder's methods have
    return None


def values(*args, **kwargs):
    return call_arguments(delete_volume, args, kwargs)


VOLUME = types.SimpleNamespace(id="5d1e", volume_id="5d1e")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{volume.id}-delete_volume", "cinder-5d1e-delete_volume"),
        ("{volume.id}-{f_name}", "cinder-5d1e-delete_volume"),
        ("{f_name}-{volume.volume_id}-{connector[host]}", "cinder-delete_volume-5d1e-node1"),
        ("3par-{volume.id}", "cinder-3par-5d1e"),
        ("pure-{connector[host]}", "cinder-pure-node1"),
    ],
)
def test_cinder_templates_render_like_cinder(template: str, expected: str) -> None:
    assert render_names([template], values(None, VOLUME, {"host": "node1"}), "cinder-") == [expected]


def test_several_names_are_sorted_and_deduplicated() -> None:
    names = render_names(["b-{volume.id}", "a-{volume.id}", "b-{volume.id}"], values(None, VOLUME), "")
    assert names == ["a-5d1e", "b-5d1e"]


def test_keyword_and_default_arguments_are_visible() -> None:
    assert render_names(["{connector}"], values(None, volume=VOLUME), "") == ["None"]
    assert render_names(["{extra}"], values(None, VOLUME, extra="x"), "") == ["x"]


@pytest.mark.parametrize("template", ["{missing}", "{volume.nope}", "{connector[host]}"])
def test_unrenderable_template_is_a_usage_error(template: str) -> None:
    with pytest.raises(UsageError, match="cannot be rendered"):
        render_names([template], values(None, VOLUME), "")


def test_rendered_name_must_be_ascii() -> None:
    with pytest.raises(UsageError):
        render_names(["{volume.id}"], values(None, types.SimpleNamespace(id="vol-é")), "")
