"""kafka-python over SASL_SSL with OAUTHBEARER.

Usage: oauthbearer.py SASL_SSL_HOST:PORT CA_PEM TOKEN FORGED_TOKEN
Produces and reads back records with TOKEN (sent with a SASL extension, which the broker
accepts and ignores as Kafka's validator does); FORGED_TOKEN must be refused.
"""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.net.sasl.oauth import AbstractTokenProvider

addr, ca, token, forged = sys.argv[1:5]
topic = "python-oauthbearer"


class Provider(AbstractTokenProvider):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def token(self):
        return self.value

    def extensions(self):
        return {"traceId": "python"}


def security(value):
    return dict(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                sasl_oauth_token_provider=Provider(value), ssl_cafile=ca,
                ssl_check_hostname=True)


producer = KafkaProducer(bootstrap_servers=addr, acks="all", **security(token))
for i in range(20):
    producer.send(topic, value=f"oauth-{i}".encode())
producer.flush(timeout=60)
producer.close()
consumer = KafkaConsumer(bootstrap_servers=addr, consumer_timeout_ms=5000, **security(token))
partition = TopicPartition(topic, 0)
consumer.assign([partition])
consumer.seek_to_beginning(partition)
values = [m.value.decode() for m in consumer]
consumer.close()
assert values == [f"oauth-{i}" for i in range(20)], values

try:
    # kafka-python retries until its bootstrap times out: 5 s, not 30.
    KafkaProducer(bootstrap_servers=addr, bootstrap_timeout_ms=5000,
                  **security(forged)).close()
except KafkaError as error:
    print(f"forged token refused: {type(error).__name__}")
else:
    sys.exit("a forged token was accepted")
print("oauthbearer round trip")
