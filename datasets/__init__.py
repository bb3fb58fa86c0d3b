"""matris.datasets: dataset builders and LMDB shards."""
