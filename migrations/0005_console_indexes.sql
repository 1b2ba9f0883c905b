-- The console's user list at 10,000 users (issue 7's benchmark, scripts/bench-console):
-- each sort order of the users page walks an index instead of sorting the table, so a
-- page of 50 reads about 50 rows past its offset. The search itself is a substring
-- (LIKE '%q%'), which no B-tree serves; the count scans the table once.
-- Every order ends with the address (store::UserSort), as these indexes do.
CREATE INDEX users_domain_local_part ON users (domain, local_part);
CREATE INDEX users_quota_address ON users (quota_bytes, address);
CREATE INDEX users_created_address ON users (created_at, address);
-- users_domain (domain) is a prefix of users_domain_local_part and serves nothing else.
DROP INDEX users_domain;
