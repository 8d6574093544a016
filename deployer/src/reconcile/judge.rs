//! Judging the bucket against the table, one user at a time, by walking the scanned users and
//! the listed objects in step, both sorted by key.
//!
//! Every key under `KEY_PREFIX` falls in one group: a user's prefix `<KEY_PREFIX><segment>/`
//! (the keys sharing a prefix are contiguous in sorted order), or, for a key with no `/` after
//! the prefix, the key alone. A scanned user's object key is its group followed by
//! `OBJECT_NAME`, and because a segment never holds a `/`, users sort in the same order as
//! their groups; so one merge of the two sorted tables visits each group once, holding only
//! that group in memory.

use usersync_function::key::{decode_name, user_keys};
use usersync_function::{Config, DeleteScope};

use super::etag::{check_etag, BucketEncryption, EtagCheck, Md5Digest};

/// Examples of each class kept for the report.
pub const EXAMPLES: usize = 10;

/// A listed object, as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub etag: String,
    pub size: u64,
    pub last_modified: i64,
}

/// Whose keys a group holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// Keys under the prefix of the user `name`.
    User { name: String },
    /// Keys that are no user's under the key rule: no `/` after the prefix, or a segment the
    /// rule never produces.
    Foreign,
}

/// Everything the walk found for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// `<KEY_PREFIX><segment>/`, or the whole key of a lone foreign key.
    pub key: String,
    pub kind: GroupKind,
    /// The MD5 of the body the user's item makes, when this run scanned the user.
    pub expected: Option<Md5Digest>,
    /// The user's object, `<group>OBJECT_NAME`, when listed.
    pub object: Option<ObjectMeta>,
    /// Other keys listed in the user's group: the user's own under `DELETE_SCOPE=prefix`.
    pub others: u64,
    pub other_examples: Vec<String>,
    /// Keys of the group that are foreign and that this run judges.
    pub foreign: u64,
    pub foreign_examples: Vec<String>,
}

/// What a group's user is, once judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No user of this run here: only foreign keys, or a user another share judges.
    NoUser,
    InStep,
    /// The user has no object.
    Missing,
    /// The user's object does not hold the item's body.
    Stale,
    /// The user is not in the table but has objects.
    Orphaned,
}

impl Verdict {
    /// Whether a repair has something to fix.
    pub fn is_drift(self) -> bool {
        matches!(self, Self::Missing | Self::Stale | Self::Orphaned)
    }
}

/// A group's verdict, or what must be asked before it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    Settled(Verdict),
    /// Read the user's object: its ETag does not tell (`check`).
    ReadBody {
        key: String,
        expected: Md5Digest,
        check: EtagCheck,
    },
    /// The user was not in this share's segments: a consistent read tells whether they are
    /// in the table (judged by another share) or orphaned.
    CheckPresence {
        name: String,
    },
}

/// The result of walking part of the index.
#[derive(Debug)]
pub struct Walked {
    pub groups: Vec<Group>,
    /// Nothing is left after the last group.
    pub complete: bool,
}

/// Walks users (object key → MD5 of the expected body) and objects (key → listing), both in
/// key order, into at most `max_groups` groups. `judges` says whether this run judges a
/// foreign key (see [`super::share::Share::judges`]).
pub fn walk<E>(
    users: impl Iterator<Item = Result<(String, Md5Digest), E>>,
    objects: impl Iterator<Item = Result<(String, ObjectMeta), E>>,
    config: &Config,
    judges: &dyn Fn(&str) -> bool,
    max_groups: usize,
) -> Result<Walked, E> {
    let mut users = users;
    let mut objects = objects;
    let mut user = users.next().transpose()?;
    let mut object = objects.next().transpose()?;
    let mut groups = Vec::new();
    loop {
        let user_group = user
            .as_ref()
            .map(|(key, _)| user_group_of(key, &config.object_name));
        let object_group = object
            .as_ref()
            .map(|(key, _)| group_of(key, &config.key_prefix));
        let key = match (user_group, object_group) {
            (None, None) => {
                return Ok(Walked {
                    groups,
                    complete: true,
                })
            }
            (Some(group), None) | (None, Some(group)) => group,
            (Some(a), Some(b)) => a.min(b),
        }
        .to_owned();
        if groups.len() == max_groups {
            return Ok(Walked {
                groups,
                complete: false,
            });
        }
        let mut group = Group::new(key, config);
        if let Some((user_key, md5)) = &user {
            if user_group_of(user_key, &config.object_name) == group.key {
                group.expected = Some(*md5);
                user = users.next().transpose()?;
            }
        }
        while let Some((object_key, meta)) = &object {
            if group_of(object_key, &config.key_prefix) != group.key {
                break;
            }
            group.add_object(object_key, meta, config, judges);
            object = objects.next().transpose()?;
        }
        groups.push(group);
    }
}

/// The group of a listed key: `<prefix><segment>/`, or the key itself when no `/` follows the
/// prefix.
pub fn group_of<'k>(key: &'k str, key_prefix: &str) -> &'k str {
    let Some(rest) = key.strip_prefix(key_prefix) else {
        return key;
    };
    match rest.find('/') {
        Some(slash) => &key[..key_prefix.len() + slash + 1],
        None => key,
    }
}

/// The group of a scanned user's object key (`<group>OBJECT_NAME`).
fn user_group_of<'k>(key: &'k str, object_name: &str) -> &'k str {
    key.strip_suffix(object_name).unwrap_or(key)
}

/// The first key that sorts after every key of `group`: where a walk resumes after it.
/// Keys under a prefix ending in `/` all sort before the prefix with that `/` replaced by
/// `0`, the next character.
pub fn after_group(group: &str) -> (String, bool) {
    match group.strip_suffix('/') {
        Some(stem) => (format!("{stem}0"), true),
        None => (group.to_owned(), false),
    }
}

impl Group {
    fn new(key: String, config: &Config) -> Self {
        let kind = key
            .strip_suffix('/')
            .and_then(|stem| stem.strip_prefix(config.key_prefix.as_str()))
            .and_then(decode_name)
            .filter(|name| {
                !name.is_empty() && user_keys(&config.key_prefix, name, &config.object_name).is_ok()
            })
            .map_or(GroupKind::Foreign, |name| GroupKind::User { name });
        Self {
            key,
            kind,
            expected: None,
            object: None,
            others: 0,
            other_examples: Vec::new(),
            foreign: 0,
            foreign_examples: Vec::new(),
        }
    }

    fn add_object(
        &mut self,
        key: &str,
        meta: &ObjectMeta,
        config: &Config,
        judges: &dyn Fn(&str) -> bool,
    ) {
        let foreign = match self.kind {
            GroupKind::User { .. } => {
                if key.strip_prefix(self.key.as_str()) == Some(config.object_name.as_str()) {
                    self.object = Some(meta.clone());
                    return;
                }
                self.others += 1;
                push_example(&mut self.other_examples, key);
                // Under object scope only `<user prefix><OBJECT_NAME>` is a user's key.
                config.delete_scope == DeleteScope::Object
            }
            GroupKind::Foreign => true,
        };
        if foreign && judges(key) {
            self.foreign += 1;
            push_example(&mut self.foreign_examples, key);
        }
    }

    /// The user's name, for a user's group.
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            GroupKind::User { name } => Some(name),
            GroupKind::Foreign => None,
        }
    }

    /// The user's object key.
    pub fn object_key(&self, config: &Config) -> String {
        format!("{}{}", self.key, config.object_name)
    }

    /// The listed keys that are the user's: their object, and under prefix scope everything
    /// under their prefix.
    pub fn user_objects(&self, scope: DeleteScope) -> u64 {
        let others = match scope {
            DeleteScope::Object => 0,
            DeleteScope::Prefix => self.others,
        };
        u64::from(self.object.is_some()) + others
    }

    /// The user's keys as examples of an orphan, sorted.
    pub fn orphan_examples(&self, config: &Config) -> Vec<String> {
        let mut keys = Vec::new();
        if self.object.is_some() {
            keys.push(self.object_key(config));
        }
        if config.delete_scope == DeleteScope::Prefix {
            keys.extend(self.other_examples.iter().cloned());
        }
        keys.sort();
        keys.truncate(EXAMPLES);
        keys
    }

    /// The verdict, or what to ask first. `judges` says whether this run judges a user it did
    /// not scan; `shared` whether other shares scanned other segments.
    pub fn pending(
        &self,
        config: &Config,
        judges: &dyn Fn(&str) -> bool,
        shared: bool,
        encryption: BucketEncryption,
    ) -> Pending {
        let GroupKind::User { name } = &self.kind else {
            return Pending::Settled(Verdict::NoUser);
        };
        match (&self.expected, &self.object) {
            (Some(expected), Some(object)) => {
                match check_etag(&object.etag, expected, encryption) {
                    EtagCheck::Matches => Pending::Settled(Verdict::InStep),
                    check => Pending::ReadBody {
                        key: self.object_key(config),
                        expected: *expected,
                        check,
                    },
                }
            }
            (Some(_), None) => Pending::Settled(Verdict::Missing),
            (None, _) if !judges(name) || self.user_objects(config.delete_scope) == 0 => {
                Pending::Settled(Verdict::NoUser)
            }
            (None, _) if shared => Pending::CheckPresence { name: name.clone() },
            (None, _) => Pending::Settled(Verdict::Orphaned),
        }
    }
}

/// The verdict on a body read for [`Pending::ReadBody`].
pub fn body_verdict(read: Option<&Md5Digest>, expected: &Md5Digest) -> Verdict {
    match read {
        None => Verdict::Missing,
        Some(found) if found == expected => Verdict::InStep,
        Some(_) => Verdict::Stale,
    }
}

fn push_example(examples: &mut Vec<String>, key: &str) {
    if examples.len() < EXAMPLES {
        examples.push(key.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    use usersync_function::testing::config;

    use super::*;
    use crate::reconcile::etag::md5_of;

    fn meta(body: &[u8]) -> ObjectMeta {
        ObjectMeta {
            etag: format!("\"{}\"", hex::encode(md5_of(body))),
            size: body.len() as u64,
            last_modified: 0,
        }
    }

    /// The verdict of every group, with reads answered from `bodies` and presence from
    /// `present`.
    fn judge(
        users: &[(&str, &[u8])],
        objects: &[(&str, &[u8])],
        config: &Config,
        judges: &dyn Fn(&str) -> bool,
        shared: bool,
        encryption: BucketEncryption,
        present: &[&str],
    ) -> Vec<(String, Verdict, u64)> {
        let users: BTreeMap<String, Md5Digest> = users
            .iter()
            .map(|(key, body)| ((*key).to_owned(), md5_of(body)))
            .collect();
        let objects: BTreeMap<String, (ObjectMeta, Vec<u8>)> = objects
            .iter()
            .map(|(key, body)| ((*key).to_owned(), (meta(body), body.to_vec())))
            .collect();
        let walked = walk(
            users
                .iter()
                .map(|(k, v)| Ok::<_, Infallible>((k.clone(), *v))),
            objects.iter().map(|(k, (m, _))| Ok((k.clone(), m.clone()))),
            config,
            judges,
            usize::MAX,
        )
        .unwrap();
        assert!(walked.complete);
        walked
            .groups
            .iter()
            .map(|group| {
                let verdict = match group.pending(config, judges, shared, encryption) {
                    Pending::Settled(verdict) => verdict,
                    Pending::ReadBody { key, expected, .. } => {
                        let read = objects.get(&key).map(|(_, body)| md5_of(body));
                        body_verdict(read.as_ref(), &expected)
                    }
                    Pending::CheckPresence { name } => {
                        if present.contains(&name.as_str()) {
                            Verdict::NoUser
                        } else {
                            Verdict::Orphaned
                        }
                    }
                };
                (group.key.clone(), verdict, group.foreign)
            })
            .collect()
    }

    const ANN: &[u8] = br#"{"name":"ann"}"#;
    const BOB: &[u8] = br#"{"name":"bob"}"#;

    fn everyone(_: &str) -> bool {
        true
    }

    #[test]
    fn every_class_under_object_scope() {
        let config = Config {
            key_prefix: "u/".into(),
            ..config("b", DeleteScope::Object)
        };
        let verdicts = judge(
            &[
                ("u/ann/userdata", ANN),
                ("u/bob/userdata", BOB),
                ("u/cy/userdata", b"{}"),
                ("u/a%2Fb/userdata", b"{}"),
            ],
            &[
                ("u/a%2Fb/userdata", b"{}"),      // in step (a/b)
                ("u/ann/userdata", ANN),          // in step
                ("u/ann/avatar.png", b"x"),       // foreign under object scope
                ("u/bob/userdata", b"{\"old\"}"), // stale
                ("u/dee/userdata", b"{}"),        // orphaned
                ("u/dee/notes", b"{}"),           // foreign, the orphan's neighbour
                ("u/readme", b"x"),               // foreign: no slash
                ("u/bad%ZZ/userdata", b"x"),      // foreign: no name encodes to it
                ("u/%2E/userdata", b"{}"),        // orphaned: the user "."
            ],
            &config,
            &everyone,
            false,
            BucketEncryption::SseS3,
            &[],
        );
        let expected: Vec<(String, Verdict, u64)> = [
            ("u/%2E/", Verdict::Orphaned, 0),
            ("u/a%2Fb/", Verdict::InStep, 0),
            ("u/ann/", Verdict::InStep, 1),
            ("u/bad%ZZ/", Verdict::NoUser, 1),
            ("u/bob/", Verdict::Stale, 0),
            ("u/cy/", Verdict::Missing, 0),
            ("u/dee/", Verdict::Orphaned, 1),
            ("u/readme", Verdict::NoUser, 1),
        ]
        .iter()
        .map(|(k, v, f)| ((*k).to_owned(), *v, *f))
        .collect();
        assert_eq!(verdicts, expected);
    }

    #[test]
    fn every_class_under_prefix_scope() {
        let config = config("b", DeleteScope::Prefix);
        let verdicts = judge(
            &[("ann/userdata", ANN), ("bob/userdata", BOB)],
            &[
                ("ann/avatar.png", b"x"), // the present user's own: not reported
                ("ann/userdata", ANN),
                ("bob/z", b"x"),          // bob's own; bob has no object: missing
                ("dee/avatar.png", b"x"), // the absent user's prefix: orphaned, no object
                ("eve/a", b"x"),
                ("eve/userdata", b"{}"),
                ("eve/z", b"x"),
                ("loose.txt", b"x"), // foreign
            ],
            &config,
            &everyone,
            false,
            BucketEncryption::None,
            &[],
        );
        assert_eq!(
            verdicts,
            [
                ("ann/".to_owned(), Verdict::InStep, 0),
                ("bob/".to_owned(), Verdict::Missing, 0),
                ("dee/".to_owned(), Verdict::Orphaned, 0),
                ("eve/".to_owned(), Verdict::Orphaned, 0),
                ("loose.txt".to_owned(), Verdict::NoUser, 1),
            ]
        );
    }

    #[test]
    fn groups_of_names_that_are_prefixes_of_each_other_stay_apart() {
        // "a-b/..." sorts between "a" and "a/...": the merge must still pair each user with
        // their own keys.
        let config = config("b", DeleteScope::Prefix);
        let verdicts = judge(
            &[
                ("a/userdata", ANN),
                ("a-b/userdata", BOB),
                ("a.b/userdata", BOB),
            ],
            &[
                ("a", b"x"),
                ("a-b/userdata", BOB),
                ("a.b/userdata", BOB),
                ("a/userdata", ANN),
                ("a/x", b"x"),
                ("a0", b"x"),
            ],
            &config,
            &everyone,
            false,
            BucketEncryption::SseS3,
            &[],
        );
        let classes: Vec<(&str, Verdict)> =
            verdicts.iter().map(|(k, v, _)| (k.as_str(), *v)).collect();
        assert_eq!(
            classes,
            [
                ("a", Verdict::NoUser),
                ("a-b/", Verdict::InStep),
                ("a.b/", Verdict::InStep),
                ("a/", Verdict::InStep),
                ("a0", Verdict::NoUser),
            ]
        );
    }

    #[test]
    fn a_differing_etag_is_stale_only_when_the_body_differs() {
        let config = config("b", DeleteScope::Object);
        let users: BTreeMap<String, Md5Digest> =
            BTreeMap::from([("ann/userdata".to_owned(), md5_of(ANN))]);
        // The listing's ETag is some other MD5 (an object re-encrypted or copied) but the body
        // is right: the read clears it.
        let listed = ObjectMeta {
            etag: format!("\"{}\"", hex::encode(md5_of(b"other"))),
            size: 0,
            last_modified: 0,
        };
        let walked = walk(
            users
                .iter()
                .map(|(k, v)| Ok::<_, Infallible>((k.clone(), *v))),
            std::iter::once(Ok(("ann/userdata".to_owned(), listed))),
            &config,
            &everyone,
            10,
        )
        .unwrap();
        let pending = walked.groups[0].pending(&config, &everyone, false, BucketEncryption::SseS3);
        let Pending::ReadBody {
            key,
            expected,
            check,
        } = pending
        else {
            panic!("{pending:?}");
        };
        assert_eq!((key.as_str(), check), ("ann/userdata", EtagCheck::Differs));
        assert_eq!(body_verdict(Some(&md5_of(ANN)), &expected), Verdict::InStep);
        assert_eq!(body_verdict(Some(&md5_of(BOB)), &expected), Verdict::Stale);
        assert_eq!(body_verdict(None, &expected), Verdict::Missing);
    }

    #[test]
    fn a_kms_bucket_or_a_multipart_etag_reads_every_body() {
        let config = config("b", DeleteScope::Object);
        let verdicts = judge(
            &[("ann/userdata", ANN), ("bob/userdata", BOB)],
            &[("ann/userdata", ANN), ("bob/userdata", b"{}")],
            &config,
            &everyone,
            false,
            BucketEncryption::Kms,
            &[],
        );
        let classes: Vec<Verdict> = verdicts.iter().map(|(_, v, _)| *v).collect();
        assert_eq!(classes, [Verdict::InStep, Verdict::Stale]);

        let multipart = ObjectMeta {
            etag: format!("\"{}-3\"", hex::encode(md5_of(ANN))),
            size: 0,
            last_modified: 0,
        };
        let walked = walk(
            std::iter::once(Ok::<_, Infallible>((
                "ann/userdata".to_owned(),
                md5_of(ANN),
            ))),
            std::iter::once(Ok(("ann/userdata".to_owned(), multipart))),
            &config,
            &everyone,
            10,
        )
        .unwrap();
        assert!(matches!(
            walked.groups[0].pending(&config, &everyone, false, BucketEncryption::SseS3),
            Pending::ReadBody {
                check: EtagCheck::NotAnMd5,
                ..
            }
        ));
    }

    #[test]
    fn a_share_judges_only_its_own_unscanned_users_and_asks_before_calling_them_orphans() {
        let config = config("b", DeleteScope::Object);
        let mine = |text: &str| text != "bob" && text != "x/y";
        let verdicts = judge(
            &[("ann/userdata", ANN)],
            &[
                ("ann/userdata", ANN),
                ("bob/userdata", BOB),   // not this share's: another judges bob
                ("cy/userdata", b"{}"),  // this share's, scanned by another: present
                ("dee/userdata", b"{}"), // this share's and in no segment: orphaned
                ("x/y", b"x"),           // foreign, another share's
                ("z", b"x"),             // foreign, this share's
            ],
            &config,
            &mine,
            true,
            BucketEncryption::SseS3,
            &["cy"],
        );
        assert_eq!(
            verdicts,
            [
                ("ann/".to_owned(), Verdict::InStep, 0),
                ("bob/".to_owned(), Verdict::NoUser, 0),
                ("cy/".to_owned(), Verdict::NoUser, 0),
                ("dee/".to_owned(), Verdict::Orphaned, 0),
                ("x/".to_owned(), Verdict::NoUser, 0),
                ("z".to_owned(), Verdict::NoUser, 1),
            ]
        );
    }

    #[test]
    fn a_walk_stops_after_max_groups_and_resumes_after_the_last() {
        let config = config("b", DeleteScope::Prefix);
        let keys = ["a/1", "a/2", "a0", "b/userdata", "c"];
        let objects: Vec<(String, ObjectMeta)> =
            keys.iter().map(|k| ((*k).to_owned(), meta(b"x"))).collect();
        let first = walk(
            std::iter::empty::<Result<(String, Md5Digest), Infallible>>(),
            objects.iter().cloned().map(Ok),
            &config,
            &everyone,
            1,
        )
        .unwrap();
        assert!(!first.complete);
        assert_eq!(first.groups[0].key, "a/");
        assert_eq!(first.groups[0].others, 2);
        let (resume, inclusive) = after_group(&first.groups[0].key);
        assert_eq!((resume.as_str(), inclusive), ("a0", true));
        let rest = walk(
            std::iter::empty::<Result<(String, Md5Digest), Infallible>>(),
            objects
                .iter()
                .filter(|(k, _)| k.as_str() >= resume.as_str())
                .cloned()
                .map(Ok),
            &config,
            &everyone,
            10,
        )
        .unwrap();
        let groups: Vec<&str> = rest.groups.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(groups, ["a0", "b/", "c"]);
        assert_eq!(after_group("c"), ("c".to_owned(), false));
    }
}
