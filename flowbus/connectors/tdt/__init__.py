"""Télétransmission: ACTES (contrôle de légalité) and PES V2 (Hélios) through a TdT such as S²LOW."""
