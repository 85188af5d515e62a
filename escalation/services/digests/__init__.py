"""Digests and reports: the daily standup digest, the weekly stakeholder report, the monthly process review.

``figures`` computes each figure once (its docstring is its definition), ``schedule`` says when each digest
is due and for whom, ``compose`` renders and stores a digest and queues it to the audience's channels.
"""
