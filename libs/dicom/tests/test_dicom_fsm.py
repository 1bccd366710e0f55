"""The PS3.8 Table 9-10 state machine: every row driven through `StateMachine.fire`."""

from __future__ import annotations

import pytest
from cinebridge_dicom import fsm, pdu
from cinebridge_dicom.fsm import AbortReason, Event, Primitive, ProviderRejection, State

RQ = b"\x01\x00\x00\x00\x00\x00"  # stands for an A-ASSOCIATE-RQ PDU the requestor sends
AC = b"\x02\x00\x00\x00\x00\x00"
RJ = pdu.associate_rj(1, 1, 7)

#: PS3.8 Tables 9-6 to 9-9: the state each action leads to (AE-6 and AR-8 have two).
NEXT = {
    "AE-1": {"Sta4"}, "AE-2": {"Sta5"}, "AE-3": {"Sta6"}, "AE-4": {"Sta1"}, "AE-5": {"Sta2"},
    "AE-6": {"Sta3", "Sta13"}, "AE-7": {"Sta6"}, "AE-8": {"Sta13"},
    "DT-1": {"Sta6"}, "DT-2": {"Sta6"},
    "AR-1": {"Sta7"}, "AR-2": {"Sta8"}, "AR-3": {"Sta1"}, "AR-4": {"Sta13"}, "AR-5": {"Sta1"},
    "AR-6": {"Sta7"}, "AR-7": {"Sta8"}, "AR-8": {"Sta9", "Sta10"}, "AR-9": {"Sta11"},
    "AR-10": {"Sta12"},
    "AA-1": {"Sta13"}, "AA-2": {"Sta1"}, "AA-3": {"Sta1"}, "AA-4": {"Sta1"}, "AA-5": {"Sta1"},
    "AA-6": {"Sta13"}, "AA-7": {"Sta13"}, "AA-8": {"Sta13"},
}  # fmt: skip


class Recorder:
    """A transport and service user that keeps what the actions did, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []

    def connect(self) -> None:
        self.log.append(("connect", None))

    def send(self, data: bytes) -> None:
        self.log.append(("send", data))

    def close(self) -> None:
        self.log.append(("close", None))

    def indicate(self, primitive: Primitive, payload: object) -> None:
        self.log.append(("indicate", primitive))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


E = Event
#: From Sta1, the events that bring a machine into each state (both roles where they differ).
PATHS: dict[str, list[list[tuple[Event, object]]]] = {
    "Sta1": [[]],
    "Sta2": [[(E.EVT5, None)]],
    "Sta3": [[(E.EVT5, None), (E.EVT6, "rq")]],
    "Sta4": [[(E.EVT1, RQ)]],
    "Sta5": [[(E.EVT1, RQ), (E.EVT2, None)]],
    "Sta6": [
        [(E.EVT1, RQ), (E.EVT2, None), (E.EVT3, "ac")],
        [(E.EVT5, None), (E.EVT6, "rq"), (E.EVT7, AC)],
    ],
    "Sta7": [[(E.EVT1, RQ), (E.EVT2, None), (E.EVT3, "ac"), (E.EVT11, None)]],
    "Sta8": [[(E.EVT5, None), (E.EVT6, "rq"), (E.EVT7, AC), (E.EVT12, None)]],
    "Sta9": [[(E.EVT1, RQ), (E.EVT2, None), (E.EVT3, "ac"), (E.EVT11, None), (E.EVT12, None)]],
    "Sta10": [[(E.EVT5, None), (E.EVT6, "rq"), (E.EVT7, AC), (E.EVT11, None), (E.EVT12, None)]],
    "Sta11": [
        [
            (E.EVT1, RQ), (E.EVT2, None), (E.EVT3, "ac"), (E.EVT11, None), (E.EVT12, None),
            (E.EVT14, None),
        ]
    ],
    "Sta12": [
        [
            (E.EVT5, None), (E.EVT6, "rq"), (E.EVT7, AC), (E.EVT11, None), (E.EVT12, None),
            (E.EVT13, None),
        ]
    ],
    "Sta13": [[(E.EVT5, None), (E.EVT19, None)], [(E.EVT5, None), (E.EVT6, ProviderRejection(RJ))]],
}  # fmt: skip


def machine_in(state: str, path: list[tuple[Event, object]]) -> tuple[fsm.StateMachine, Recorder]:
    rec = Recorder()
    m = fsm.StateMachine(rec, rec, artim_s=30.0, clock=Clock())
    for event, payload in path:
        m.fire(event, payload)
    assert m.state.value == state
    rec.log.clear()
    return m, rec


def payload_for(event: Event) -> object:
    return {E.EVT1: RQ, E.EVT7: AC, E.EVT8: RJ, E.EVT9: b"\x04\x00\x00\x00\x00\x00"}.get(event)


ROWS = sorted(fsm.TABLE.items(), key=lambda kv: (int(kv[0][0].value[3:]), kv[0][1].value))


def test_the_table_has_every_cell_the_standard_prints() -> None:
    # Table 9-10 fills 123 cells: the 8 PDU events in the 11 states with a connection (88), the
    # transport close in 12 states, A-ABORT request in 10, and 13 cells of the other primitives.
    assert len(fsm.TABLE) == 123
    connected = [s for s in State if s not in (State.STA1, State.STA4)]
    for event in fsm.PDU_EVENTS:
        assert {s for (e, s) in fsm.TABLE if e is event} == set(connected), event
    assert set(fsm.TABLE.values()) == set(NEXT)


@pytest.mark.parametrize(
    ("key", "action"), ROWS, ids=[f"{e.value}-{s.value}-{a}" for (e, s), a in ROWS]
)
def test_every_row_is_reachable_and_leads_where_the_standard_says(
    key: tuple[Event, State], action: str
) -> None:
    event, state = key
    for path in PATHS[state.value]:
        m, rec = machine_in(state.value, path)
        m.trace = []
        taken = m.fire(event, payload_for(event))
        assert taken == action
        assert m.state.value in NEXT[action]
        assert m.trace == [(event, state, action)]
        _check_effects(action, m, rec)


def _check_effects(action: str, m: fsm.StateMachine, rec: Recorder) -> None:
    kinds = [k for k, _ in rec.log]
    sent = [d for k, d in rec.log if k == "send"]
    if action == "AE-1":
        assert kinds == ["connect"]
    elif action == "AE-2":
        assert sent == [RQ]
    elif action in ("AE-7", "DT-1", "AR-7"):
        assert len(sent) == 1
    elif action in ("AR-1",):
        assert sent == [pdu.RELEASE_RQ_PDU]
    elif action in ("AR-4", "AR-9"):
        assert sent == [pdu.RELEASE_RP_PDU]
    elif action in ("AA-1", "AA-7", "AA-8"):
        assert len(sent) == 1 and sent[0][0] == pdu.ABORT
    elif action in ("AE-4", "AR-3", "AA-2", "AA-3"):
        assert kinds[-1] == "close"
    elif action in ("AA-5", "AR-5", "AA-6", "AA-4"):
        assert "send" not in kinds and "close" not in kinds
    starts_artim = {"AE-5", "AE-8", "AR-4", "AA-1", "AA-8"}
    stops_artim = {"AA-2", "AA-5", "AR-5"}
    if action in starts_artim:
        assert m.artim_deadline is not None
    if action in stops_artim:
        assert m.artim_deadline is None


@pytest.mark.parametrize("state", [s for s in State if s.value in PATHS])
def test_primitives_the_table_leaves_empty_are_refused(state: State) -> None:
    local = [E.EVT1, E.EVT2, E.EVT5, E.EVT7, E.EVT8, E.EVT9, E.EVT11, E.EVT14, E.EVT15, E.EVT18]
    for event in local:
        if (event, state) in fsm.TABLE:
            continue
        m, rec = machine_in(state.value, PATHS[state.value][0])
        with pytest.raises(fsm.InvalidPrimitive):
            m.fire(event, payload_for(event))
        assert m.state is state and rec.log == []


def test_release_collision_requestor_side_runs_sta7_sta9_sta11_sta1() -> None:
    m, rec = machine_in("Sta7", PATHS["Sta7"][0])
    m.fire(E.EVT12)
    assert m.state is State.STA9 and ("indicate", Primitive.RELEASE_COLLISION) in rec.log
    m.fire(E.EVT14)
    assert m.state is State.STA11 and rec.log[-1] == ("send", pdu.RELEASE_RP_PDU)
    m.fire(E.EVT13)
    assert m.state is State.STA1 and rec.log[-1] == ("close", None)


def test_release_collision_acceptor_side_runs_sta7_sta10_sta12_sta13() -> None:
    m, rec = machine_in("Sta6", PATHS["Sta6"][1])
    m.fire(E.EVT11)
    m.fire(E.EVT12)
    assert m.state is State.STA10
    m.fire(E.EVT13)
    assert m.state is State.STA12 and rec.log[-1] == ("indicate", Primitive.RELEASE_CONFIRMED)
    m.fire(E.EVT14)
    assert m.state is State.STA13 and rec.log[-1] == ("send", pdu.RELEASE_RP_PDU)
    assert m.artim_deadline is not None


def test_artim_expiry_closes_an_idle_connection_and_a_closing_one() -> None:
    clock = Clock()
    rec = Recorder()
    m = fsm.StateMachine(rec, rec, artim_s=5.0, clock=clock)
    m.fire(E.EVT5)
    assert not m.artim_expired
    clock.now += 5.0
    assert m.artim_expired
    assert m.fire(E.EVT18) == "AA-2" and m.state is State.STA1 and rec.log[-1][0] == "close"
    m.fire(E.EVT5)
    m.fire(E.EVT19, AbortReason(2, pdu.UNRECOGNISED_PDU))
    assert rec.log[-1] == ("send", pdu.a_abort(pdu.UNRECOGNISED_PDU, source=2))
    clock.now += 5.0
    assert m.artim_expired and m.fire(E.EVT18) == "AA-2" and m.state is State.STA1


def test_provider_rejection_sends_the_rj_and_waits_for_the_close() -> None:
    m, rec = machine_in("Sta2", PATHS["Sta2"][0])
    assert m.fire(E.EVT6, ProviderRejection(RJ)) == "AE-6"
    assert m.state is State.STA13 and rec.log == [("send", RJ)]
    assert m.fire(E.EVT17) == "AR-5" and m.state is State.STA1


def test_unexpected_pdu_in_data_transfer_aborts_with_the_provider_as_source() -> None:
    m, rec = machine_in("Sta6", PATHS["Sta6"][1])
    assert m.fire(E.EVT6) == "AA-8"
    assert rec.log[0] == ("send", pdu.a_abort(pdu.UNEXPECTED_PDU, source=2))
    assert rec.log[1] == ("indicate", Primitive.PROVIDER_ABORT)
