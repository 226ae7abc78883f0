"""The quota of each account: its rate, the limiter shared by every process, the headers that state it,
dispatch and forecasts.
"""
