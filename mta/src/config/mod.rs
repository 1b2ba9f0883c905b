//! smtpd.conf: the OpenSMTPD 6.4+ grammar parsed into typed configuration.
