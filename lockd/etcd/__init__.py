"""Everything that knows etcd's wire format: the gateway client, the key layout and the delete-watch."""
