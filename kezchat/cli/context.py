"""
The state of one C{kez-chat} invocation, built once and handed to the
command: where the home is, how to print, the account and its unlocked
key, the servers' clients and the local stores.

Expensive or interactive things (unlocking the key, opening HTTP pools)
happen on first use, so C{whoami} never asks for a passphrase and
C{--help} never touches the network. So do the imports behind them
(Twisted, treq, the key's crypto): a command that only reads the home
starts without them (L{kezchat.cli.commands}).
"""

from __future__ import annotations

import os
from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kezchat.cli.errors import CliError
from kezchat.cli.home import Account, Home, default_home
from kezchat.cli.output import Output
from kezchat.cli.pins import ContactBook
from kezchat.cli.received import ReceivedStore
from kezchat.cli.secrets import SecretStore
from kezchat.client.answers import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from kezchat.client.http import ChatClient, SigClient
    from kezchat.identity.keys import KeyPair

HOME_ENV = "KEZ_CHAT_HOME"
SERVER_ENV = "KEZ_CHAT_SERVER_URL"
RESOLVE_ENV = "KEZ_CHAT_RESOLVE"
#: seconds one HTTP exchange may take in all (default L{DEFAULT_TIMEOUT})
TIMEOUT_ENV = "KEZ_CHAT_HTTP_TIMEOUT"


def http_timeout() -> float:
    """
    The overall deadline of one HTTP exchange: C{KEZ_CHAT_HTTP_TIMEOUT}
    seconds, else L{DEFAULT_TIMEOUT}.
    """
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise CliError(f"{TIMEOUT_ENV} must be a number of seconds from 0 to 3600")
    return value


def resolve_overrides(given: list[str] | None) -> dict[str, str]:
    """
    C{--resolve DOMAIN=URL} values (else C{KEZ_CHAT_RESOLVE}, space-separated)
    as C{{domain: base URL}}, with the server's rules
    (L{kezchat.protocol.resolve}).

    @raise CliError: one is not C{DOMAIN=http(s)://host[:port][/path]}.
    """
    entries = given if given else os.environ.get(RESOLVE_ENV, "").split()
    if not entries:
        return {}
    # imported only now: it brings the key code, which `whoami` never needs
    from kezchat.protocol.resolve import parse_overrides

    try:
        return parse_overrides(entries)
    except ValueError as e:
        raise CliError(str(e)) from None


class Context:
    """
    One invocation's collaborators.

    @ivar args: the parsed command line.
    @ivar out: where results, warnings and prompts go.
    @ivar home: the home directory's files.
    @ivar secrets: the seed's storage.
    @ivar contacts: pinned keys of other people.
    @ivar received: received messages and the listen cursors.
    """

    def __init__(
        self,
        reactor: Any,
        args: Namespace,
        out: Output,
        home: Home,
        secrets: SecretStore | None = None,
        server_url: str | None = None,
        resolve: dict[str, str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.args = args
        self.out = out
        self.home = home
        self.secrets = secrets or SecretStore(home)
        self.contacts = ContactBook(home)
        self.received = ReceivedStore(home)
        self._server_url = server_url
        #: C{--resolve}: base URLs of domains that are not at https://<domain>
        self._resolve = resolve or {}
        self._keypair: KeyPair | None = None
        self._chat: dict[str, ChatClient] = {}
        self._sig: SigClient | None = None
        self._closers: list[Any] = []
        self._interrupts: list[Any] = []

    @classmethod
    def from_args(cls, reactor: Any, args: Namespace) -> Context:
        root = args.home or os.environ.get(HOME_ENV) or default_home()
        server = args.server or os.environ.get(SERVER_ENV) or None
        return cls(
            reactor,
            args,
            Output(bool(args.json)),
            Home(Path(root).expanduser()),
            server_url=server.rstrip("/") if server else None,
            resolve=resolve_overrides(getattr(args, "resolve", None)),
        )

    # -- the account ------------------------------------------------------

    def account(self) -> Account:
        """
        The account of this home: C{handle}, C{fqhn}, C{primary},
        C{server_url}, C{sigchain_url}, C{secret}.

        @raise CliError: when the home holds none yet.
        """
        account = self.home.account()
        if account is None:
            raise CliError(
                f"no account in {self.home.root}: create one with `kez-chat register HANDLE`"
                " or restore yours with `kez-chat recover`"
            )
        return account

    async def keypair(self) -> KeyPair:
        """
        The account's unlocked key (asks for the passphrase if needed).
        """
        if self._keypair is None:
            account = self.account()
            if account.get("secret") != "keyring":
                self.secrets.passphrase(confirm=False)  # ask here, on the main thread
            primary, kind = account["primary"], account.get("secret", "file")
            if self.reactor is None:  # no event loop to keep turning (run_direct)
                self._keypair = self.secrets.load(primary, kind)
            else:
                from twisted.internet.threads import deferToThread

                self._keypair = await deferToThread(self.secrets.load, primary, kind)
        return self._keypair

    def set_keypair(self, keypair: KeyPair) -> None:
        self._keypair = keypair

    # -- servers ----------------------------------------------------------

    @property
    def server_url_override(self) -> str | None:
        """
        C{--server} or C{KEZ_CHAT_SERVER_URL}, if given.
        """
        return self._server_url

    def domain_url(self, domain: str) -> str:
        """
        Where C{domain}'s chat server is: its C{--resolve} URL, else
        C{https://<domain>} (never plain http unless C{--resolve} says so).
        """
        domain = domain.strip().lower()
        return self._resolve.get(domain, f"https://{domain}")

    def server_url(self, handle: str | None = None) -> str:
        """
        The chat-server base URL: C{--server}/C{KEZ_CHAT_SERVER_URL}, else
        the C{--resolve} URL of the account's domain, else the account's,
        else where the domain of C{handle} is (L{domain_url}).
        """
        if self._server_url:
            return self._server_url
        account = self.home.account()
        if account is not None:
            domain = str(account.get("fqhn", "")).partition("@")[2]
            if domain in self._resolve:
                return self._resolve[domain]
            if account.get("server_url"):
                return str(account["server_url"])
        if handle and "@" in handle:
            return self.domain_url(handle.partition("@")[2])
        raise CliError(
            f"which chat server? give --server URL (or set {SERVER_ENV}),"
            " or a qualified handle such as alice@example.org"
        )

    def chat(self, url: str | None = None) -> ChatClient:
        """
        The chat-server client (one per base URL, closed at exit).
        """
        url = (url or self.server_url()).rstrip("/")
        if url not in self._chat:
            if not url.startswith(("http://", "https://")):
                raise CliError(f"the server URL must start with http:// or https://, not {url!r}")
            client: ChatClient
            if self.reactor is None:  # run_direct: one-shot requests, no event loop
                from kezchat.client.blocking import BlockingChatClient

                client = BlockingChatClient(url, timeout=http_timeout())  # type: ignore[assignment]
            else:
                from kezchat.client.http import ChatClient

                client = ChatClient(url, self.reactor, timeout=http_timeout())
            self._chat[url] = client
            self._closers.append(client.close)
        return self._chat[url]

    def sig(self) -> SigClient:
        """
        The sig-server client (addressed by the chain URLs of records).
        """
        if self._sig is None:
            sig: SigClient
            if self.reactor is None:
                from kezchat.client.blocking import BlockingSigClient

                sig = BlockingSigClient(timeout=http_timeout())  # type: ignore[assignment]
            else:
                from kezchat.client.http import SigClient

                sig = SigClient(self.reactor, timeout=http_timeout())
            self._sig = sig
            self._closers.append(sig.close)
        return self._sig

    async def sleep(self, seconds: float) -> None:
        """
        Wait C{seconds} (on the reactor, or blocking when there is none).
        """
        if self.reactor is None:
            import time

            time.sleep(seconds)
        else:
            from twisted.internet.task import deferLater

            await deferLater(self.reactor, seconds, lambda: None)

    def on_interrupt(self, callback: Any) -> None:
        """
        Call C{callback()} on Ctrl-C or SIGTERM, so a long-running command
        (C{listen}, C{share}) can finish cleanly; it then has a few seconds
        before the process stops.
        """
        self._interrupts.append(callback)

    def interrupt(self) -> None:
        for callback in self._interrupts:
            callback()

    def on_close(self, closer: Any) -> None:
        """
        Run C{closer()} (may return an awaitable) when the command ends.
        """
        self._closers.append(closer)

    async def close(self) -> None:
        closers, self._closers = self._closers, []
        for closer in reversed(closers):
            try:
                result = closer()
                if result is not None and hasattr(result, "__await__"):
                    await result
            except Exception as e:  # closing must not hide the command's own outcome
                self.out.warn(f"while closing: {e}")
