"""iterate_batches: index batches over an in-memory tensor."""

from __future__ import annotations

import pytest
import torch

from vaelab.data import iterate_batches
from vaelab.errors import VaelabError


def ids(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1)


def flat(batches) -> list[int]:
    return [int(v) for b in batches for v in b.flatten().tolist()]


def test_shuffle_covers_every_index_once():
    batches = list(iterate_batches(ids(10), 3, shuffle=True))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(flat(batches)) == list(range(10))
    assert batches[0].shape == (3, 1, 1, 1)


def test_drop_last():
    batches = list(iterate_batches(ids(10), 3, shuffle=True, drop_last=True))
    assert [len(b) for b in batches] == [3, 3, 3]
    assert len(set(flat(batches))) == 9
    assert list(iterate_batches(ids(2), 3, shuffle=False, drop_last=True)) == []


def test_no_shuffle_keeps_order():
    assert flat(iterate_batches(ids(7), 4, shuffle=False)) == list(range(7))


def test_generator_makes_epochs_reproducible():
    def epoch(seed):
        return flat(
            iterate_batches(ids(50), 8, shuffle=True, generator=torch.Generator().manual_seed(seed))
        )

    assert epoch(1) == epoch(1)
    assert epoch(1) != epoch(2)
    assert epoch(1) != list(range(50))
    generator = torch.Generator().manual_seed(1)
    first = flat(iterate_batches(ids(50), 8, shuffle=True, generator=generator))
    second = flat(iterate_batches(ids(50), 8, shuffle=True, generator=generator))
    assert first != second  # each epoch draws a fresh permutation


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_bad_batch_size(batch_size):
    with pytest.raises(VaelabError, match="batch_size"):
        iterate_batches(ids(4), batch_size, shuffle=False)
