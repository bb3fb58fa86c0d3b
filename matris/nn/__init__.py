"""Building blocks of the MatRIS model."""

from matris.nn.exchange import LOCAL, Exchange, LocalExchange

__all__ = ["LOCAL", "Exchange", "LocalExchange"]
