"""The small boolean language of ``-k`` and ``-m`` (as in pytest):

    expr  := or
    or    := and ('or' and)*
    and   := not ('and' not)*
    not   := 'not' not | '(' expr ')' | IDENT

An IDENT is any run of characters other than whitespace and parentheses; what it
matches is up to the caller (a substring of the cell id for ``-k``, a mark name for ``-m``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from amlrun.errors import UsageError

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")
Matcher = Callable[[str], bool]


class Expression:
    def __init__(self, source: str, option: str):
        self.source = source
        self.option = option
        self._tokens = [m.group(1) for m in _TOKEN.finditer(source)]
        self._pos = 0
        if not self._tokens:
            raise self._error("empty expression")
        self._tree = self._or()
        if self._pos != len(self._tokens):
            raise self._error(f"unexpected '{self._tokens[self._pos]}'")

    def _error(self, why: str) -> UsageError:
        return UsageError(f"{self.option} {self.source!r}: {why}")

    def _peek(self) -> str | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise self._error("unexpected end of expression")
        self._pos += 1
        return token

    def _or(self):
        left = self._and()
        while self._peek() == "or":
            self._take()
            right = self._and()
            left = ("or", left, right)
        return left

    def _and(self):
        left = self._not()
        while self._peek() == "and":
            self._take()
            right = self._not()
            left = ("and", left, right)
        return left

    def _not(self):
        token = self._take()
        if token == "not":
            return ("not", self._not())
        if token == "(":
            inner = self._or()
            if self._peek() != ")":
                raise self._error("missing ')'")
            self._take()
            return inner
        if token in (")", "and", "or"):
            raise self._error(f"unexpected '{token}'")
        return ("ident", token)

    def evaluate(self, matcher: Matcher) -> bool:
        def walk(node) -> bool:
            kind = node[0]
            if kind == "ident":
                return matcher(node[1])
            if kind == "not":
                return not walk(node[1])
            if kind == "and":
                return walk(node[1]) and walk(node[2])
            return walk(node[1]) or walk(node[2])

        return walk(self._tree)
