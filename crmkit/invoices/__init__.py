"""Invoices: printable documents (HTML, PDF) and what else is done with them."""
