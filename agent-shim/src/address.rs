//! Names and addresses: `[<client>:]<user>@<agent>`.
//!
//! # Charset (documented, enforced everywhere a name enters the shim)
//! * **user, client, bundle id, metadata key**: lowercase ASCII letters, digits, `.`, `_`
//!   and `-`; the first character is a letter or a digit. Users and clients are at most
//!   [`USER_NAME_MAX_BYTES`] / [`CLIENT_NAME_MAX_BYTES`] bytes, bundle ids and metadata keys
//!   at most [`BUNDLE_ID_MAX_BYTES`] / [`METADATA_KEY_MAX_BYTES`].
//! * **agent**: a host-name-like name of lowercase ASCII letters, digits, `-` and `.`; dot
//!   separated labels that are not empty and neither start nor end with `-`; at most
//!   [`AGENT_NAME_MAX_BYTES`] bytes.
//!
//! Upper case is rejected rather than folded, so that one address has exactly one spelling
//! (and one key in the store).

use std::fmt;

pub const USER_NAME_MAX_BYTES: usize = 32;
pub const CLIENT_NAME_MAX_BYTES: usize = 32;
pub const AGENT_NAME_MAX_BYTES: usize = 64;
pub const BUNDLE_ID_MAX_BYTES: usize = 64;
pub const METADATA_KEY_MAX_BYTES: usize = 64;

/// Which part of an address (or which kind of name) a problem was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamePart {
    Client,
    User,
    Agent,
    BundleId,
    MetadataKey,
}

impl NamePart {
    pub fn max_bytes(self) -> usize {
        match self {
            NamePart::Client => CLIENT_NAME_MAX_BYTES,
            NamePart::User => USER_NAME_MAX_BYTES,
            NamePart::Agent => AGENT_NAME_MAX_BYTES,
            NamePart::BundleId => BUNDLE_ID_MAX_BYTES,
            NamePart::MetadataKey => METADATA_KEY_MAX_BYTES,
        }
    }
}

impl fmt::Display for NamePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NamePart::Client => "client",
            NamePart::User => "user",
            NamePart::Agent => "agent",
            NamePart::BundleId => "bundle id",
            NamePart::MetadataKey => "metadata key",
        })
    }
}

/// Why an address or a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    #[error("address is empty")]
    EmptyAddress,
    #[error("address {input:?} has no '@' between user and agent")]
    MissingAt { input: String },
    #[error("address {input:?} has more than one '@'")]
    TooManyAt { input: String },
    #[error("address {input:?} has more than one ':' (expected [client:]user@agent)")]
    TooManyColons { input: String },
    #[error("the {part} is empty")]
    Empty { part: NamePart },
    #[error("the {part} is {len_bytes} bytes long, at most {max_bytes} are allowed")]
    TooLong {
        part: NamePart,
        len_bytes: usize,
        max_bytes: usize,
    },
    #[error("the {part} has the character {ch:?} at byte {position}; allowed: {allowed}")]
    BadChar {
        part: NamePart,
        ch: char,
        position: usize,
        allowed: &'static str,
    },
    #[error("the {part} must start with a letter or a digit, not {ch:?}")]
    BadStart { part: NamePart, ch: char },
    #[error("the agent name {input:?} has an empty label or a label starting or ending with '-'")]
    BadLabel { input: String },
}

const NAME_ALLOWED: &str = "a-z 0-9 . _ -";
const AGENT_ALLOWED: &str = "a-z 0-9 . -";

/// Checks a user, client, bundle id or metadata key (not an agent name).
pub fn check_name(part: NamePart, name: &str) -> Result<(), AddressError> {
    debug_assert!(part != NamePart::Agent, "agent names have their own rule");
    check_length(part, name)?;
    for (position, ch) in name.char_indices() {
        let ok = ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-');
        if !ok {
            return Err(AddressError::BadChar {
                part,
                ch,
                position,
                allowed: NAME_ALLOWED,
            });
        }
    }
    let first = name.chars().next().unwrap_or('.');
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(AddressError::BadStart { part, ch: first });
    }
    Ok(())
}

/// Checks an agent (host) name.
pub fn check_agent_name(name: &str) -> Result<(), AddressError> {
    let part = NamePart::Agent;
    check_length(part, name)?;
    for (position, ch) in name.char_indices() {
        let ok = ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '-');
        if !ok {
            return Err(AddressError::BadChar {
                part,
                ch,
                position,
                allowed: AGENT_ALLOWED,
            });
        }
    }
    let bad_label = name
        .split('.')
        .any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'));
    if bad_label {
        return Err(AddressError::BadLabel {
            input: name.to_owned(),
        });
    }
    Ok(())
}

fn check_length(part: NamePart, name: &str) -> Result<(), AddressError> {
    if name.is_empty() {
        return Err(AddressError::Empty { part });
    }
    if name.len() > part.max_bytes() {
        return Err(AddressError::TooLong {
            part,
            len_bytes: name.len(),
            max_bytes: part.max_bytes(),
        });
    }
    Ok(())
}

/// An agent address `[<client>:]<user>@<agent>`. Always valid once constructed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    client: Option<String>,
    user: String,
    agent: String,
}

impl Address {
    /// Parses `[<client>:]<user>@<agent>`; every problem is a typed [`AddressError`].
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        if input.is_empty() {
            return Err(AddressError::EmptyAddress);
        }
        let mut at_split = input.split('@');
        let (Some(local), Some(agent)) = (at_split.next(), at_split.next()) else {
            return Err(AddressError::MissingAt {
                input: input.to_owned(),
            });
        };
        if at_split.next().is_some() {
            return Err(AddressError::TooManyAt {
                input: input.to_owned(),
            });
        }
        let mut colon_split = local.split(':');
        let first = colon_split.next().unwrap_or("");
        let (client, user) = match (colon_split.next(), colon_split.next()) {
            (None, _) => (None, first),
            (Some(user), None) => (Some(first), user),
            (Some(_), Some(_)) => {
                return Err(AddressError::TooManyColons {
                    input: input.to_owned(),
                })
            }
        };
        Address::new(client, user, agent)
    }

    /// Builds an address from its parts, checking each.
    pub fn new(client: Option<&str>, user: &str, agent: &str) -> Result<Address, AddressError> {
        if let Some(client) = client {
            check_name(NamePart::Client, client)?;
        }
        check_name(NamePart::User, user)?;
        check_agent_name(agent)?;
        Ok(Address {
            client: client.map(str::to_owned),
            user: user.to_owned(),
            agent: agent.to_owned(),
        })
    }

    /// A local user's address from names the caller has already checked.
    pub(crate) fn of_checked_user(user: &str, agent: &str) -> Address {
        debug_assert!(check_name(NamePart::User, user).is_ok() && check_agent_name(agent).is_ok());
        Address {
            client: None,
            user: user.to_owned(),
            agent: agent.to_owned(),
        }
    }

    pub fn client(&self) -> Option<&str> {
        self.client.as_deref()
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The same address without its client part: the user it belongs to.
    pub fn user_address(&self) -> Address {
        Address {
            client: None,
            user: self.user.clone(),
            agent: self.agent.clone(),
        }
    }

    /// The same user, addressed to one client.
    pub fn with_client(&self, client: &str) -> Result<Address, AddressError> {
        check_name(NamePart::Client, client)?;
        Ok(Address {
            client: Some(client.to_owned()),
            user: self.user.clone(),
            agent: self.agent.clone(),
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(client) = &self.client {
            write!(f, "{client}:")?;
        }
        write!(f, "{}@{}", self.user, self.agent)
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

/// Who is calling: a local user acting directly, or one of the user's registered clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Caller {
    user: String,
    client: Option<String>,
}

impl Caller {
    /// The user acting directly (full authority over the user's own data).
    pub fn user(user: &str) -> Result<Caller, AddressError> {
        check_name(NamePart::User, user)?;
        Ok(Caller {
            user: user.to_owned(),
            client: None,
        })
    }

    /// A client app acting for `user`; it sees only bundles the user granted it.
    pub fn client(user: &str, client: &str) -> Result<Caller, AddressError> {
        check_name(NamePart::User, user)?;
        check_name(NamePart::Client, client)?;
        Ok(Caller {
            user: user.to_owned(),
            client: Some(client.to_owned()),
        })
    }

    pub fn user_name(&self) -> &str {
        &self.user
    }

    pub fn client_name(&self) -> Option<&str> {
        self.client.as_deref()
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.client {
            Some(client) => write!(f, "{client}:{}", self.user),
            None => f.write_str(&self.user),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        for text in ["bob@example.org", "desn:bob@a", "x.y_z-1:u-2@h-1.example"] {
            let address = Address::parse(text).expect("valid");
            assert_eq!(address.to_string(), text);
        }
        let address = Address::parse("desn:bob@a").expect("valid");
        assert_eq!(address.client(), Some("desn"));
        assert_eq!(address.user(), "bob");
        assert_eq!(address.agent(), "a");
        assert_eq!(address.user_address().to_string(), "bob@a");
    }

    #[test]
    fn names_the_problem() {
        use AddressError as E;
        assert_eq!(Address::parse(""), Err(E::EmptyAddress));
        assert!(matches!(Address::parse("bob"), Err(E::MissingAt { .. })));
        assert!(matches!(Address::parse("a@b@c"), Err(E::TooManyAt { .. })));
        assert!(matches!(
            Address::parse("a:b:c@d"),
            Err(E::TooManyColons { .. })
        ));
        assert_eq!(
            Address::parse("@a"),
            Err(E::Empty {
                part: NamePart::User
            })
        );
        assert_eq!(
            Address::parse(":bob@a"),
            Err(E::Empty {
                part: NamePart::Client
            })
        );
        assert_eq!(
            Address::parse("bob@"),
            Err(E::Empty {
                part: NamePart::Agent
            })
        );
        assert!(matches!(
            Address::parse("Bob@a"),
            Err(E::BadChar {
                part: NamePart::User,
                ch: 'B',
                ..
            })
        ));
        assert!(matches!(
            Address::parse("-bob@a"),
            Err(E::BadStart {
                part: NamePart::User,
                ch: '-'
            })
        ));
        assert!(matches!(
            Address::parse("bob@a..b"),
            Err(E::BadLabel { .. })
        ));
        assert!(matches!(
            Address::parse("bob@a_b"),
            Err(E::BadChar {
                part: NamePart::Agent,
                ..
            })
        ));
        let long = format!("{}@a", "u".repeat(USER_NAME_MAX_BYTES + 1));
        assert!(matches!(
            Address::parse(&long),
            Err(E::TooLong {
                part: NamePart::User,
                ..
            })
        ));
        assert!(matches!(
            Address::parse("b\u{e9}b@a"),
            Err(E::BadChar { ch: '\u{e9}', .. })
        ));
    }
}
