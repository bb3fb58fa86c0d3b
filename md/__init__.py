"""matris.md: ASE calculator and MD drivers."""
