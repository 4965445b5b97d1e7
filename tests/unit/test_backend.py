"""The backend seam: process slices cover every micro-batch once; one process changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from tunesmith.train.backend import Backend


def _backend(rank: int, world: int) -> Backend:
    return Backend(SimpleNamespace(process_index=rank, num_processes=world, is_main_process=rank == 0,
                                   device=torch.device("cpu")))


def test_slices_of_a_window_cover_each_micro_batch_exactly_once():
    window = [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    for world in (1, 2, 3, 5):
        slices = [_backend(rank, world).shard(window) for rank in range(world)]
        assert sorted(b for s in slices for b in s) == sorted(window)
        assert [b for s in slices for b in s if s] and sum(map(len, slices)) == len(window)
    assert _backend(0, 1).shard(window) is window


def test_one_process_is_main_and_reduces_to_itself():
    single = _backend(0, 1)
    assert single.is_main and single.world_size == 1
    loss = torch.tensor(2.5)
    assert single.all_reduce_sum(loss) is loss and single.all_reduce_sum(7) == 7
    assert not _backend(1, 2).is_main
