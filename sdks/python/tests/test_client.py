"""Tests against a real `tally dev` (the binary named by $TALLY_BIN), on free ports."""

import hashlib
import os
import secrets
import socket
import subprocess
import threading
import time
import uuid

import grpc
import pytest

from tally_client import I128_MAX, Client, TallyError

TOKEN = f"tly_sdk-test_{secrets.token_hex(24)}"
USD = "USD/2"


@pytest.fixture(scope="session")
def address(tmp_path_factory):
    binary = os.environ.get("TALLY_BIN")
    if not binary:
        pytest.skip("TALLY_BIN is not set: set it to a tally binary to run the tests "
                    "against `tally dev`")
    tmp = tmp_path_factory.mktemp("tally")
    keys = tmp / "api-keys.toml"
    keys.write_text(f'[[key]]\nid = "sdk-test"\ntenant = "sdk"\n'
                    f'sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n'
                    f'roles = ["read", "write", "admin"]\n')
    stdout = tmp / "stdout"
    with open(stdout, "w") as out, open(tmp / "stderr", "w") as err:
        server = subprocess.Popen(
            [binary, "dev", "--kafka-port", "0", "--http-listen", "127.0.0.1:0",
             "--query-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
             "--api-keys", str(keys)], stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while not (grpc_line := [line for line in stdout.read_text().splitlines()
                                 if line.startswith("grpc: ")]):
            assert server.poll() is None, f"tally dev exited: see {tmp / 'stderr'}"
            assert time.monotonic() < deadline, "tally dev did not print its gRPC address"
            time.sleep(0.1)
        yield grpc_line[0].removeprefix("grpc: ")
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def client(address):
    with Client(address, TOKEN) as client:
        yield client


@pytest.fixture
def ledger(client):
    """A fresh ledger with USD/2 defined."""
    name = f"l-{uuid.uuid4().hex[:12]}"
    client.define_asset(name, USD)
    return name


def pay(destination, amount, source="world"):
    return [{"source": source, "destination": destination, "asset": USD, "amount": amount}]


class LoseFirstAnswer(grpc.UnaryUnaryClientInterceptor):
    """Lets the first call through to the server, then reports UNAVAILABLE as if its answer
    had been lost; records every attempt's metadata."""

    def __init__(self):
        self.attempts = []

    def intercept_unary_unary(self, continuation, details, request):
        self.attempts.append(dict(details.metadata))
        outcome = continuation(details, request)
        if len(self.attempts) == 1:
            outcome.result()  # the server has answered
            raise Unavailable()
        return outcome


class Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "answer lost (test)"

    def trailing_metadata(self):
        return ()


class Proxy:
    """A TCP proxy whose connections can be cut, to drop a stream."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.sockets, self.lock = [], threading.Lock()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [downstream, upstream]
                self.connections += 1
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.listener.close()
        self.cut()


def test_write_retried_with_the_same_key_gets_the_same_answer(address, ledger):
    lose = LoseFirstAnswer()
    with Client(address, TOKEN, interceptors=(lose,)) as client:
        answer = client.post_transaction(ledger, "t-1", pay("alice", 250))

    assert len(lose.attempts) == 2
    key = lose.attempts[0]["idempotency-key"]
    assert uuid.UUID(key).version == 4
    assert lose.attempts[1]["idempotency-key"] == key
    assert answer.status == "ACCEPTED"
    assert answer.command_id == key
    with Client(address, TOKEN) as client:
        # Made once: one statement line.
        lines = list(client.statement(ledger, "alice", position=answer.position))
        assert [(line.tx_id, line.amount) for line in lines] == [("t-1", 250)]
        # The same key again (a later retry) gets the very same answer.
        again = client.post_transaction(ledger, "t-1", pay("alice", 250), idempotency_key=key)
        assert again == answer


def test_each_call_has_a_fresh_key(client, ledger):
    first = client.post_transaction(ledger, "t-1", pay("alice", 1))
    second = client.post_transaction(ledger, "t-2", pay("alice", 1))
    assert first.command_id != second.command_id


def test_read_your_write(client, ledger):
    answer = client.post_transaction(ledger, "t-1", pay("alice", 250))
    assert answer.position and client.last_position == answer.position

    account = client.get_account(ledger, "alice", position=answer.position)
    assert [(b.asset, b.posted) for b in account.balances] == [(USD, 250)]

    client.post_transaction(ledger, "t-2", pay("alice", 50))
    account = client.get_account(ledger, "alice", after_last_write=True)
    assert account.balances[0].posted == 300

    client.put_document("config", ledger, {"limit": 5, "tags": ["a", 1.5]}, create_only=True)
    document = client.get_document("config", ledger, after_last_write=True)
    assert (document.version, document.value) == (1, {"limit": 5, "tags": ["a", 1.5]})


def test_paging_follows_next_cursor(client, ledger):
    for i in range(7):
        client.post_transaction(ledger, f"t-{i}", pay(f"acct-{i}", i + 1))
        client.put_document(f"page-{ledger}", f"k-{i}", {"i": i})
    read = dict(after_last_write=True, page_size=3)

    accounts = list(client.accounts(ledger, prefix="acct-", **read))
    assert [a.account for a in accounts] == [f"acct-{i}" for i in range(7)]

    for i in range(6):
        client.post_transaction(ledger, f"t-0-{i}", pay("acct-0", 1))
    statement = list(client.statement(ledger, "acct-0", **read))
    assert [line.balance_after for line in statement] == list(range(7, 0, -1))  # newest first

    documents = list(client.documents(f"page-{ledger}", **read))
    assert [d.value for d in documents] == [{"i": i} for i in range(7)]

    versions = [e.stream_version for e in client.events(ledger, **read)]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) == 1 + 7 + 6


@pytest.mark.parametrize("across_streams", [False, True], ids=["stream", "across-streams"])
def test_follow_resumes_after_a_dropped_stream(address, client, ledger, across_streams):
    writes = 30
    proxy = Proxy(address)
    seen = []  # the ledger's stream versions, as received
    all_ids = []  # every event received (across streams: other ledgers' too)

    def follow():
        with Client(proxy.address, TOKEN) as follower:
            events = follower.follow() if across_streams else follower.follow(ledger)
            for event in events:
                all_ids.append(event.event_id)
                if event.event_id.startswith(f"sdk/{ledger}@"):
                    seen.append(event.stream_version)
                    if len(seen) % 7 == 0:
                        proxy.cut()  # the stream drops; follow() resumes after this event
                if len(seen) == writes + 1:
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        for i in range(writes):
            client.post_transaction(ledger, f"t-{i}", pay("alice", 1))
        follower.join(60)
        assert not follower.is_alive(), f"follow() saw {len(seen)} events of {writes + 1}"
    finally:
        proxy.close()
    assert proxy.connections >= 1 + writes // 7  # it did reconnect after each cut
    assert seen == list(range(1, writes + 2))
    assert len(all_ids) == len(set(all_ids))


def test_refusal_reason_surfaces_in_tally_error(client, ledger):
    client.open_account(ledger, "alice", limits=[{"asset": USD, "min_balance": 0}])
    client.post_transaction(ledger, "t-1", pay("alice", 100))
    with pytest.raises(TallyError) as refused:
        client.post_transaction(ledger, "t-2", pay("bob", 101, source="alice"))
    error = refused.value
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "INSUFFICIENT_FUNDS"
    assert error.metadata["http_status"] == "422"
    assert error.metadata["position"]
    assert "alice" in error.message

    with pytest.raises(TallyError) as missing:
        client.get_account(ledger, "nobody", after_last_write=True)
    assert (missing.value.code, missing.value.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


def test_amounts_at_the_i128_limit_round_trip_exactly(client, ledger):
    answer = client.post_transaction(ledger, "t-max", pay("alice", I128_MAX))
    posting = answer.event["body"]["TransactionPosted"]["postings"][0]
    assert posting["amount"] == I128_MAX

    alice = client.get_account(ledger, "alice", position=answer.position)
    world = client.get_account(ledger, "world", position=answer.position)
    assert alice.balances[0].posted == I128_MAX
    assert world.balances[0].posted == -I128_MAX
    transaction = client.get_transaction(ledger, "t-max", position=answer.position)
    assert transaction.postings[0].amount == I128_MAX
    [line] = client.statement(ledger, "alice", position=answer.position)
    assert (line.amount, line.balance_after) == (I128_MAX, I128_MAX)

    with pytest.raises(TallyError) as overflow:
        client.post_transaction(ledger, "t-more", pay("alice", 1))
    assert (overflow.value.code, overflow.value.reason) == (grpc.StatusCode.OUT_OF_RANGE,
                                                           "OVERFLOW")


def test_amounts_must_be_ints_in_the_i128_range(client, ledger):
    with pytest.raises(ValueError):
        client.post_transaction(ledger, "t-1", pay("alice", I128_MAX + 1))
    with pytest.raises(TypeError):
        client.post_transaction(ledger, "t-1", pay("alice", "250"))
    with pytest.raises(TypeError):
        client.post_transaction(ledger, "t-1", pay("alice", 2.5))


def test_a_failed_write_carries_its_idempotency_key():
    # Nothing listens on port 9: every attempt fails UNAVAILABLE.
    with Client("127.0.0.1:9", TOKEN, retries=1, timeout=2.0) as client:
        with pytest.raises(TallyError) as failed:
            client.define_asset("main", USD)
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE
        assert uuid.UUID(failed.value.command_id).version == 4
        with pytest.raises(TallyError) as mine:
            client.define_asset("main", USD, idempotency_key="mine")
        assert mine.value.command_id == "mine"


def test_documents_are_checked_before_anything_is_sent():
    with Client("127.0.0.1:9", TOKEN, retries=0, timeout=2.0) as client:
        for value in ["hello", [1, 2], 5, None]:
            with pytest.raises(TypeError):
                client.put_document("config", "k", value)
        for value in [{"a": 2**53 + 1}, {"a": [float("nan")]}, {"a": {"b": float("inf")}}]:
            with pytest.raises(ValueError):
                client.put_document("config", "k", value)
        with pytest.raises(TypeError):
            client.put_document("config", "k", {"a": object()})


def test_a_write_answered_pending_settles_to_its_final_answer(tmp_path):
    binary = os.environ.get("TALLY_BIN")
    if not binary:
        pytest.skip("TALLY_BIN is not set")
    # A server whose wait for an answer is 1 ms: nearly every write comes back PENDING.
    keys = tmp_path / "api-keys.toml"
    keys.write_text(f'[[key]]\nid = "sdk-test"\ntenant = "sdk"\n'
                    f'sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n'
                    f'roles = ["read", "write"]\n')
    stdout = tmp_path / "stdout"
    with open(stdout, "w") as out:
        server = subprocess.Popen(
            [binary, "dev", "--kafka-port", "0", "--http-listen", "127.0.0.1:0",
             "--query-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
             "--api-keys", str(keys), "--http-wait-ms", "1"],
            stdout=out, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (line := [l for l in stdout.read_text().splitlines() if l.startswith("grpc: ")]):
            assert server.poll() is None and time.monotonic() < deadline, "tally dev did not start"
            time.sleep(0.1)
        pending = 0
        with Client(line[0].removeprefix("grpc: "), TOKEN) as client:
            for i in range(5):
                sent = client.define_asset(f"pending-{i}", USD)
                pending += sent.status == "PENDING"
                answer = client.settle(sent)
                assert answer.status == "ACCEPTED" and answer.command_id == sent.command_id
                assert answer.position and client.last_position == answer.position
                kept = client.get_outcome(answer.command_id, f"pending-{i}", position=answer.position)
                assert kept.event == answer.event
        assert pending > 0, "no write came back PENDING: the test tested nothing"
    finally:
        server.terminate()
        server.wait(30)
