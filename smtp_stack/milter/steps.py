"""Which steps a MilterServer asks the MTA for: only what its chain needs.

Each middleware may declare the stages it needs (`stages` attribute,
middleware.stages); one that declares nothing needs them all, and so
does a chain with such a middleware: it sees every command, as in SMTP.
DATA means the message, as SMTP's DATA gives it: HEADER and BODY come
with it, so that a middleware declaring DATA and reading data_stream gets
the whole message. The DATA decision at the end of the message reaches
every middleware whatever it declared (SMFIC_BODYEOB is always sent): a
middleware that only decides there (add_header, a refusal by envelope)
declares no content stage, `@stages()`, and the MTA sends it no content,
as libmilter's milter with only `eom`. The hooks that are set need their
steps too. From that union, the negotiation ([mfdef] SMFIP_*; [milter8]
milter8_event_masks):

    step       sent when the chain needs       answered (else SMFIP_NR_*)
    CONNECT    CONNECT, or on_connect          when on_connect is set
    HELO       HELO                            always (middleware may refuse)
    MAIL       MAIL, or on_mail_from           always
    RCPT       RCPT, or on_rcpt_to             always
    DATA       DATA, or on_data                always: a refusal before
                                               the content spares sending it
    HEADER     HEADER (or DATA)                never: the verdict comes at
    EOH        HEADER (or DATA)                the end of the message
    BODY       BODY (or DATA)                  when the MTA takes SMFIR_SKIP
                                               (the rest of a body nobody
                                               reads is skipped)
    UNKNOWN    never                           -
    BODYEOB    always (no flag skips it)       always: the DATA decision

The macros keep their stages: the MTA sends a stage's macros even when
it skips the stage's event ([milter8] milter8_event: "Send the macros for
this event, even when we're not reporting the event itself"; sendmail's
milter.c, milter_command: "regardless of whether we send command"), so the
session still learns the client address, the login and the queue id, and
opens without SMFIC_CONNECT at the first event that comes.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from ..middleware import STAGES, stages_of
from . import protocol as P

if TYPE_CHECKING:
    from ..options import Options

CONTENT = frozenset({'HEADER', 'BODY'})
ACTIONS = (P.ADDHDRS | P.CHGHDRS | P.CHGBODY | P.ADD_RCPT | P.ADD_RCPT_PAR | P.DEL_RCPT
           | P.CHANGE_FROM | P.QUARANTINE_ACTION)


class Plan(NamedTuple):
    """The steps (SMFIC_* letters) the MTA is asked to send, and those of
    them it is asked to wait for a reply to."""
    steps: frozenset[str]
    answered: frozenset[str]


def needs_of(middleware: Iterable[object]) -> frozenset[str]:
    """The union of the stages the middleware declared, DATA bringing
    HEADER and BODY (the message, as in SMTP); every stage when one of
    them declared nothing."""
    needed: set[str] = set()
    for fn in middleware:
        declared = stages_of(fn)
        if declared is None:
            return STAGES
        needed |= declared
    if 'DATA' in needed:
        needed |= CONTENT
    return frozenset(needed)


def plan(needs: frozenset[str], options: Options, skip_ok: bool) -> Plan:
    """The steps for a chain that needs `needs`, with `options`' hooks;
    `skip_ok`: the MTA offered SMFIP_SKIP."""
    steps: set[str] = {P.EOB}
    answered: set[str] = {P.EOB}
    if 'CONNECT' in needs or options.on_connect is not None:
        steps.add(P.CONNECT)
        if options.on_connect is not None:
            answered.add(P.CONNECT)
    if 'HELO' in needs:
        steps.add(P.HELO)
    if 'MAIL' in needs or options.on_mail_from is not None:
        steps.add(P.MAIL)
    if 'RCPT' in needs or options.on_rcpt_to is not None:
        steps.add(P.RCPT)
    if options.on_data is not None or 'DATA' in needs:
        steps.add(P.DATA)
    answered |= steps & {P.HELO, P.MAIL, P.RCPT, P.DATA}
    if 'HEADER' in needs:
        steps |= {P.HEADER, P.EOH}
    if 'BODY' in needs:
        steps.add(P.BODY)
        if skip_ok:
            answered.add(P.BODY)
    return Plan(frozenset(steps), frozenset(answered))


def negotiate(offer: P.Negotiation, plan_: Plan, wanted: Mapping[int, str]) -> P.Negotiation:
    """The answer to the MTA's offer for `plan_`, with `wanted` macros."""
    steps = plan_.steps - {P.EOB}
    answer = P.answer_negotiation(offer, actions=ACTIONS, steps=steps,
                                  answered=plan_.answered - {P.EOB},
                                  macros=wanted)
    if P.BODY in plan_.answered:    # [mfdef] SMFIP_SKIP: this milter may answer SKIP
        answer = answer._replace(protocol=answer.protocol | (offer.protocol & P.SKIP_OK))
    return answer
