"""GET /admin/deployments never shows a credential, not even one written into a URL (the
endpoint itself is exercised end to end in tests/api/test_ui.py)."""

from __future__ import annotations

import pytest

from hearth.api.admin.deployments import without_credentials


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("http://user:s3cret@10.0.0.7:8000/v1", "http://10.0.0.7:8000/v1"),
        ("https://host/v1?api-key=s3cret", "https://host/v1"),
        ("http://[::1]:11434/v1", "http://[::1]:11434/v1"),
    ],
)
def test_the_upstream_url_is_shownwithout_credentials(url: str, shown: str) -> None:
    assert without_credentials(url) == shown
