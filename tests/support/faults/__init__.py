"""Test utilities that produce network and file-system faults for real (see proxy.FaultProxy)."""

from .proxy import Fault, FaultProxy, Injected, RandomFaults, Request, Stats, first, response_fault, scripted

__all__ = ["Fault", "FaultProxy", "Injected", "RandomFaults", "Request", "Stats", "first", "response_fault", "scripted"]
