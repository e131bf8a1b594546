"""The services' partitioner puts every key where aiokafka's default (the Java client's) does,
so a key's records stay on one partition whoever produced them."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from shared.kafka import RememberingPartitioner


def test_every_key_goes_where_the_default_partitioner_puts_it_also_when_remembered() -> None:
    rng = random.Random(11)
    keys = [rng.randbytes(rng.randint(1, 40)) for _ in range(300)] + [b"audit-7-000", b"csc"]
    partitioner = RememberingPartitioner()
    for count in (1, 3, 12, 16):
        partitions = list(range(count))
        for _ in range(2):  # the second time from what it remembered
            for key in keys:
                assert partitioner(key, partitions, partitions) == DefaultPartitioner()(
                    key, partitions, partitions
                )


def test_it_forgets_beyond_its_bound_and_still_answers_the_same() -> None:
    partitioner = RememberingPartitioner()
    partitions = list(range(12))
    keys = [f"key-{n}".encode() for n in range(RememberingPartitioner.REMEMBERED + 5)]
    first = [partitioner(k, partitions, partitions) for k in keys]
    assert len(partitioner._hashes) <= RememberingPartitioner.REMEMBERED
    assert [partitioner(k, partitions, partitions) for k in keys] == first


def test_no_key_goes_to_an_available_partition() -> None:
    partitioner = RememberingPartitioner()
    assert all(partitioner(None, [0, 1, 2, 3], [2]) == 2 for _ in range(20))
