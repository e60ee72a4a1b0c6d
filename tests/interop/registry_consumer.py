"""Reads a Tally destination topic as another team's consumer would: confluent-kafka's
DeserializingConsumer with an AvroDeserializer backed by its SchemaRegistryClient, which looks up
each record's writer schema by the id in its Confluent framing.

    registry_consumer.py BOOTSTRAP TOPIC REGISTRY_URL COUNT

Reads from the start until COUNT records came (at most a minute; exits 1 if fewer came), and
prints one JSON line per record: its key, its tally-event-id header, the schema id it carries,
and the event_id and stream_version of the value as deserialized."""

import json
import sys
import time

from confluent_kafka import DeserializingConsumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import StringDeserializer

bootstrap, topic, registry_url, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
consumer = DeserializingConsumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": f"registry-consumer-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "key.deserializer": StringDeserializer("utf_8"),
        "value.deserializer": AvroDeserializer(SchemaRegistryClient({"url": registry_url})),
    }
)
consumer.subscribe([topic])
deadline = time.time() + 60
read = 0
while read < count and time.time() < deadline:
    message = consumer.poll(0.5)
    if message is None:
        continue
    if message.error():
        raise SystemExit(f"consumer error: {message.error()}")
    headers = dict(message.headers() or [])
    value = message.value()
    print(
        json.dumps(
            {
                "key": message.key(),
                "id_header": headers["tally-event-id"].decode(),
                "event_id": value["event_id"],
                "stream_version": value["stream_version"],
            }
        )
    )
    read += 1
consumer.close()
sys.exit(0 if read >= count else 1)
