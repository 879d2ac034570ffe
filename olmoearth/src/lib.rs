//! The OlmoEarth v1 encoder in candle.
