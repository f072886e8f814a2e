"""Secure mail (mail sécurisé): personal links, recipient page, read receipts, reminders, replies."""
