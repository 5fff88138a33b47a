"""Erasure of one employee from one program (LGPD/GDPR right to erasure).

- `identity`: the program's salt and the salted hash that stands for an erased user id;
  `erased_among` is what the scorer asks, so an erased user is never scored again;
- `rows`: the database part, one transaction under the user's row lock;
- `stream`: the user's messages still held in the program's JetStream stream;
- `erase`: the whole erasure (database, snapshot object, stream) and the audit log.
"""
