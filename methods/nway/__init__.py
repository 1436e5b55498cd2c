"""N-way methods: one method over a group of N models of one base, findings attributed to subsets of the
members (`core/nway.py`). Each file here registers one N-way method with `@register_nway_method`; they are listed by
`NWAY_METHODS`, not by the two-model `METHODS`.
"""
