"""Produces Tally commands to Kafka as another team's producer would: confluent-kafka's
AvroSerializer with its SchemaRegistryClient, which registers the writer schema and frames each
record as 00 + the registry's 4-byte schema id + the datum.

    registry_producer.py BOOTSTRAP TOPIC REGISTRY_URL SUBJECT WRITER.avsc COMMAND.avsc MANIFEST

Each MANIFEST line is {"key": ..., "file": ...}: a command Tally encoded (single-object, its
current schema COMMAND.avsc). It is read with fastavro, given the default of every field the
writer schema adds, serialized with AvroSerializer(WRITER.avsc) under SUBJECT, and produced with
the key. Prints one JSON line per record: its partition, offset and the schema id it carries.
"""
import io
import json
import sys

import fastavro
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, topic, registry_url, subject, writer_path, command_path, manifest = sys.argv[1:8]
with open(writer_path) as f:
    writer_text = f.read()
with open(command_path) as f:
    tally_schema = fastavro.parse_schema(json.load(f))
added = {field["name"]: field["default"] for field in json.loads(writer_text)["fields"] if "default" in field}

registry = SchemaRegistryClient({"url": registry_url})
serialize = AvroSerializer(
    registry,
    writer_text,
    conf={"auto.register.schemas": True, "subject.name.strategy": lambda ctx, name: subject},
)
producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
context = SerializationContext(topic, MessageField.VALUE)
deliveries = []


def delivered(err, msg):
    if err is not None:
        raise SystemExit(f"delivery failed: {err}")
    deliveries.append({"partition": msg.partition(), "offset": msg.offset(), "schema_id": int.from_bytes(msg.value()[1:5], "big")})


with open(manifest) as f:
    for line in f:
        entry = json.loads(line)
        with open(entry["file"], "rb") as record_file:
            data = record_file.read()
        command = fastavro.schemaless_reader(io.BytesIO(data[10:]), tally_schema, return_record_name=True)
        for name, default in added.items():
            command.setdefault(name, default)
        producer.produce(topic, key=entry["key"].encode(), value=serialize(command, context), on_delivery=delivered)
        producer.poll(0)
left = producer.flush(60)
if left:
    raise SystemExit(f"{left} records not delivered")
for d in deliveries:
    print(json.dumps(d))
