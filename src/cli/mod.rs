pub mod sendmail;
