//! Tables: the lookup services of table(5) over file, inline and sqlite backends.
