"""Operations: retention (pynenc_purge)."""
