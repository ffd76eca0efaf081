"""kafka-python over SASL_SSL with SCRAM-SHA-512, and over SSL with a client certificate.

Usage: sasl_ssl.py SASL_SSL_HOST:PORT SSL_HOST:PORT CA_PEM CLIENT_CERT_PEM CLIENT_KEY_PEM USER PASSWORD
Produces and reads back records through each listener; a wrong password must fail.
"""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

sasl_ssl, ssl_addr, ca, cert, key, user, password = sys.argv[1:8]
topic = "python-secured"


def round_trip(name, **security):
    producer = KafkaProducer(bootstrap_servers=sasl_ssl if name == "scram" else ssl_addr,
                             acks="all", **security)
    for i in range(20):
        producer.send(topic, value=f"{name}-{i}".encode())
    producer.flush(timeout=60)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=sasl_ssl if name == "scram" else ssl_addr,
                             consumer_timeout_ms=5000, **security)
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    values = [m.value.decode() for m in consumer]
    consumer.close()
    mine = [v for v in values if v.startswith(name + "-")]
    assert mine == [f"{name}-{i}" for i in range(20)], values


scram = dict(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
             sasl_plain_username=user, sasl_plain_password=password, ssl_cafile=ca,
             ssl_check_hostname=True)
round_trip("scram", **scram)
round_trip("mtls", security_protocol="SSL", ssl_cafile=ca, ssl_certfile=cert, ssl_keyfile=key)

wrong = dict(scram, sasl_plain_password="wrong")
try:
    KafkaProducer(bootstrap_servers=sasl_ssl, **wrong).close()
except KafkaError as error:
    print(f"wrong password refused: {type(error).__name__}")
else:
    sys.exit("a wrong password was accepted")
print("secured round trips")
