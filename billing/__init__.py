"""The billing ledger: accounts, operations and the rules that move money between them."""
