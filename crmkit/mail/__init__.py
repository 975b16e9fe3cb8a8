"""Mail: the IMAP poller that turns a support inbox into cases, and mail-merge campaigns.

Pure logic (parsing a message, matching it to records, deciding what a message
means) is kept apart from the I/O (IMAP, SMTP, the store), so each can be
tested alone.
"""
