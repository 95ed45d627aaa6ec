"""Stream entry ids as the API takes them: spelled the way Redis spells them, so two spellings
never name two dead letters (or two replay counters)."""

from __future__ import annotations

import pytest

from services.api.routes.dead_letters import canonical_entry_id


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("0-0", "0-0"),
        ("000-00", "0-0"),
        ("0007-01", "7-1"),
        ("1795751207113-0", "1795751207113-0"),
        (f"{2**64 - 1}-{2**64 - 1}", f"{2**64 - 1}-{2**64 - 1}"),
    ],
)
def test_an_entry_id_is_spelled_as_redis_spells_it(given: str, canonical: str) -> None:
    assert canonical_entry_id(given) == canonical


@pytest.mark.parametrize("given", [f"{2**64}-0", f"0-{2**64}", "99999999999999999999-0"])
def test_a_part_past_64_bits_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="64 bits"):
        canonical_entry_id(given)
