"""The baseline: a raw aiokafka consume -> produce passthrough, as a process of its own.

It reads batches as the services do, sends every record on with the services' producer
settings (idempotent, acks=all, 5 ms linger) and commits only once the batch is
acknowledged: the same delivery discipline, with no validation, store or logging.
Run: python -m tests.bench.passthrough BOOTSTRAP SOURCE TARGET GROUP [--batch N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def passthrough(bootstrap: str, source: str, target: str, group: str, batch: int) -> None:
    """Forwards records until SIGTERM."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100, max_records=batch)
            sends = [
                await producer.send(target, record.value, key=record.key)
                for records in fetched.values()
                for record in records
            ]
            if sends:
                await asyncio.gather(*sends)
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    """Parses the command line and runs until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bootstrap")
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("group")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(passthrough(args.bootstrap, args.source, args.target, args.group, args.batch))


if __name__ == "__main__":
    main()
