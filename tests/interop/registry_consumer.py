"""Reads a Tally destination topic as another team's consumer would decode it: confluent-kafka's
AvroDeserializer backed by its SchemaRegistryClient, which looks up each record's writer schema by
the id in its Confluent framing.

    registry_consumer.py BOOTSTRAP TOPIC REGISTRY_URL COUNT

Reads every partition from its start, outside any consumer group (assigned, not subscribed:
tally dev's in-process broker is slow to form groups for outside clients), until COUNT records
came (at most a minute; exits 1 if fewer came). Prints one JSON line per record: its key, its
tally-event-id header, and the event_id and stream_version of the value as deserialized."""

import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, topic, registry_url, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
context = SerializationContext(topic, MessageField.VALUE)
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
deadline = time.time() + 60
read = 0
while read < count and time.time() < deadline:
    message = consumer.poll(0.5)
    if message is None:
        continue
    if message.error():
        raise SystemExit(f"consumer error: {message.error()}")
    headers = dict(message.headers() or [])
    value = deserialize(message.value(), context)
    record = {
        "key": message.key().decode(),
        "id_header": headers["tally-event-id"].decode(),
        "event_id": value["event_id"],
        "stream_version": value["stream_version"],
    }
    print(json.dumps(record), flush=True)
    read += 1
sys.exit(0 if read >= count else 1)
