from __future__ import annotations

import evalrun


def test_all_is_sorted_and_complete() -> None:
    assert evalrun.__all__ == sorted(evalrun.__all__)
    for name in evalrun.__all__:
        assert hasattr(evalrun, name), name
    public = {n for n in vars(evalrun) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(evalrun.__all__)
