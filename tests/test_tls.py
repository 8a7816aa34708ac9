"""
In-process TLS (SPEC §4): C{--listen ssl:…} serves HTTPS.

A throwaway CA and a server certificate for 127.0.0.1/localhost are made
per test; the client trusts only that CA, so a pass proves the server
presents the configured certificate and a verifying client accepts it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.ssl import Certificate
from twisted.trial.unittest import TestCase
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseFailed,
    ResponseNeverReceived,
)

from kezchat.identity.keys import KeyPair
from tests.support import json_of, registration, start_server, temp_dir


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "kezchat test CA") -> tuple[ec.EllipticCurvePrivateKey,
                                                           x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[bytes, bytes]:
    """
    A leaf for localhost and 127.0.0.1 signed by the CA; returns the PEM
    private key and certificate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class TLSTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        directory = temp_dir(self)
        ca_key, ca_cert = make_ca()
        self.ca_pem = pem(ca_cert)
        key_pem, cert_pem = make_server_cert(ca_key, ca_cert)
        key_path = os.path.join(directory, "server.key")
        cert_path = os.path.join(directory, "server.pem")
        with open(key_path, "wb") as f:
            f.write(key_pem)
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        self.server = await start_server(
            self,
            listen=(f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}",),
        )
        self.url = f"https://127.0.0.1:{self.server.port}"

    def client_trusting(self, ca_pem: bytes | None) -> HTTPClient:
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        if ca_pem is None:
            policy = BrowserLikePolicyForHTTPS()  # the platform's trust store
        else:
            policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(ca_pem))
        return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))

    async def test_healthz_and_registration_over_https(self) -> None:
        client = self.client_trusting(self.ca_pem)
        response = await client.get(f"{self.url}/v1/healthz")
        self.assertEqual(response.code, 200)
        self.assertEqual((await json_of(response))["status"], "ok")

        key = KeyPair.generate()
        response = await client.post(f"{self.url}/v1/register",
                                     json=registration(key, "secure"))
        self.assertEqual(response.code, 201, await response.content())
        response = await client.get(f"{self.url}/v1/by-primary/{key.primary}")
        self.assertEqual((await json_of(response))["fqhn"], "secure@kez.lat")

    async def test_client_not_trusting_the_ca_fails(self) -> None:
        for ca_pem in (None, pem(make_ca("some other CA")[1])):
            client = self.client_trusting(ca_pem)
            with self.assertRaises(ResponseNeverReceived) as caught:
                await client.get(f"{self.url}/v1/healthz")
            self.assertIn("certificate verify failed", str(caught.exception))

    async def test_plain_http_to_the_tls_port_is_not_served(self) -> None:
        """
        The TLS listener speaks only TLS: a plain-HTTP request gets no
        HTTP answer.
        """
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        client = HTTPClient(Agent(reactor, pool=pool))
        with self.assertRaises((ResponseNeverReceived, ResponseFailed)):
            await client.get(f"http://127.0.0.1:{self.server.port}/v1/healthz")
