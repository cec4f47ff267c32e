"""Pure parsers of device output: text in, dataclass out, ParseError for unknown formats.

Why a package of small modules: each format (one /proc file, one dumpsys service) has its own
quirks, fixtures and tests; nothing here does I/O, so every parser is fuzzable.
"""
