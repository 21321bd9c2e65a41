"""Benchmarks run by hand (not by pytest): bench/raw_chain.py, …"""
