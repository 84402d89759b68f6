"""Faults produced for real: a fault-injecting TCP proxy (proxy.FaultProxy), real stores to put it in front of
(stores), and the checks every fault run must pass (checks)."""

from .proxy import Fault, FaultProxy, Injected, RandomFaults, Request, Stats, first, response_fault, scripted

__all__ = ["Fault", "FaultProxy", "Injected", "RandomFaults", "Request", "Stats", "first", "response_fault", "scripted"]
