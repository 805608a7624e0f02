//! What the decision reads of a pod ([`Facts`]), from its JSON ([`Facts::from_value`], what
//! [`super::mutate`] is given) or from a typed view borrowed from the request's bytes
//! ([`PodView`], what the webhook parses). The decision itself is one function of the facts
//! (`super::decide`), so the two entry points decide alike wherever both can read a pod.
//!
//! [`PodView`] is strict where the JSON reading is lenient: a field of an unexpected type (an
//! `annotations` array, a `nodeName` number, a toleration that is no `Toleration`…) fails its
//! deserialization instead of becoming a skip. The webhook then reads the same bytes again as
//! JSON and decides with [`super::mutate`], so such a pod is decided exactly as before; the API
//! server, which re-encodes every object it admits from its own types, never sends one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::{NodeAffinity, Toleration};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::skip::{INJECTED_ANNOTATION, MIRROR_ANNOTATION, SKIP_ANNOTATION, SkipReason};

/// A pod as the decision sees it; the errors sit where the decision would meet them, so that a
/// reason found earlier (an opt-out annotation) still wins over a later one (a bad `spec`).
#[derive(Debug)]
pub(super) struct Facts<'a> {
    /// `metadata` is an object (else it is absent or null).
    pub metadata: bool,
    /// `metadata.annotations`, when it is an object.
    pub annotations: Option<Annotations<'a>>,
    /// The name of the DaemonSet that controls the pod ("" when unnamed), if one does.
    pub daemon_set: Option<Cow<'a, str>>,
    pub spec: Result<Spec<'a>, SkipReason>,
}

#[derive(Debug)]
pub(super) struct Annotations<'a> {
    /// `warmpool.io/skip` is the string `true`.
    pub opted_out: bool,
    /// `kubernetes.io/config.mirror` is there, whatever its value.
    pub mirror: bool,
    /// `warmpool.io/injected`, when a string.
    pub injected: Option<Cow<'a, str>>,
}

#[derive(Debug)]
pub(super) struct Spec<'a> {
    /// `spec.nodeName`, when a string.
    pub node_name: Option<Cow<'a, str>>,
    pub placement: Result<Placement, SkipReason>,
}

/// The scheduling-relevant parts of the spec, typed: what [`crate::core::mutation::scheduling`] decides on and
/// the patch is built from. A shape that does not deserialize would be refused by the API
/// server too; the pod is left alone.
#[derive(Debug)]
pub(super) struct Placement {
    /// `spec.affinity` is an object (else absent or null).
    pub affinity: bool,
    pub node_affinity: Option<NodeAffinity>,
    pub node_selector: Option<BTreeMap<String, String>>,
    /// `None` when absent or null: the patch then adds the list instead of appending to it.
    pub tolerations: Option<Vec<Toleration>>,
}

impl Placement {
    pub fn view(&self) -> crate::core::mutation::scheduling::Placement<'_> {
        crate::core::mutation::scheduling::Placement {
            node_selector: self.node_selector.as_ref(),
            node_affinity: self.node_affinity.as_ref(),
            tolerations: self.tolerations.as_deref().unwrap_or_default(),
        }
    }
}

/// `None` when absent or null, the object when it is one, a skip when it is anything else.
pub(super) fn optional_object<'a>(
    v: Option<&'a Value>,
    at: &'static str,
) -> Result<Option<&'a Map<String, Value>>, SkipReason> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(SkipReason::UnexpectedShape(at)),
    }
}

impl<'a> Facts<'a> {
    /// Reads a pod's JSON: any JSON value, a shape the decision does not expect is a skip.
    pub fn from_value(pod: &'a Value) -> Result<Facts<'a>, SkipReason> {
        let pod = pod
            .as_object()
            .ok_or(SkipReason::UnexpectedShape("the pod"))?;
        let metadata = optional_object(pod.get("metadata"), "/metadata")?;
        let annotations = metadata
            .map(|m| optional_object(m.get("annotations"), "/metadata/annotations"))
            .transpose()?
            .flatten()
            .map(|a| Annotations {
                opted_out: a.get(SKIP_ANNOTATION).and_then(Value::as_str) == Some("true"),
                mirror: a.contains_key(MIRROR_ANNOTATION),
                injected: a
                    .get(INJECTED_ANNOTATION)
                    .and_then(Value::as_str)
                    .map(Cow::Borrowed),
            });
        let owners = metadata
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array);
        let daemon_set = owners
            .into_iter()
            .flatten()
            .find(|o| {
                o.get("kind").and_then(Value::as_str) == Some("DaemonSet")
                    && o.get("controller").and_then(Value::as_bool) == Some(true)
            })
            .map(|ds| Cow::Borrowed(ds.get("name").and_then(Value::as_str).unwrap_or_default()));
        let spec = optional_object(pod.get("spec"), "/spec")
            .and_then(|s| s.ok_or(SkipReason::UnexpectedShape("/spec")))
            .map(|spec| Spec {
                node_name: spec
                    .get("nodeName")
                    .and_then(Value::as_str)
                    .map(Cow::Borrowed),
                placement: placement(spec),
            });
        Ok(Facts {
            metadata: metadata.is_some(),
            annotations,
            daemon_set,
            spec,
        })
    }

    /// The facts of a typed view: every shape it holds is one the decision expects.
    pub fn from_view(pod: PodView<'a>) -> Facts<'a> {
        let pod = pod.0.0;
        let metadata = pod.metadata.map(|m| m.0);
        let (annotations, daemon_set) = match &metadata {
            None => (None, None),
            Some(m) => {
                let annotations = m.annotations.as_ref().map(|a| Annotations {
                    opted_out: a.0.skip.as_ref().is_some_and(|s| s.0 == "true"),
                    mirror: a.0.mirror.0,
                    injected: a.0.injected.as_ref().map(|s| s.0.clone()),
                });
                let daemon_set = m.owner_references.iter().flatten().find(|o| {
                    o.0.kind.as_ref().is_some_and(|k| k.0 == "DaemonSet")
                        && o.0.controller == Some(true)
                });
                let daemon_set = daemon_set
                    .map(|o| o.0.name.as_ref().map_or(Cow::Borrowed(""), |n| n.0.clone()));
                (annotations, daemon_set)
            }
        };
        let spec = pod
            .spec
            .map(|s| {
                let s = s.0;
                Spec {
                    node_name: s.node_name.map(|n| n.0),
                    placement: Ok(Placement {
                        affinity: s.affinity.is_some(),
                        node_affinity: s.affinity.and_then(|a| a.0.node_affinity),
                        node_selector: s.node_selector,
                        tolerations: s.tolerations,
                    }),
                }
            })
            .ok_or(SkipReason::UnexpectedShape("/spec"));
        Facts {
            metadata: metadata.is_some(),
            annotations,
            daemon_set,
            spec,
        }
    }
}

/// The typed parts of a spec given as JSON, in the order their shapes are checked.
fn placement(spec: &Map<String, Value>) -> Result<Placement, SkipReason> {
    fn typed<T: serde::de::DeserializeOwned>(
        v: Option<&Value>,
        at: &'static str,
    ) -> Result<Option<T>, SkipReason> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|_| SkipReason::UnexpectedShape(at)),
        }
    }
    // Shape-checked first, so a non-object says where.
    let affinity = optional_object(spec.get("affinity"), "/spec/affinity")?;
    let node_affinity = affinity.and_then(|a| a.get("nodeAffinity"));
    optional_object(node_affinity, "/spec/affinity/nodeAffinity")?;
    Ok(Placement {
        affinity: affinity.is_some(),
        node_affinity: typed(node_affinity, "/spec/affinity/nodeAffinity")?,
        node_selector: typed(spec.get("nodeSelector"), "/spec/nodeSelector")?,
        tolerations: typed(spec.get("tolerations"), "/spec/tolerations")?,
    })
}

/// A pod as the webhook reads it from an AdmissionReview: of the fields the decision reads
/// (see `Facts`) each typed, strings borrowed from the input where they hold no escapes, the
/// rest of the pod checked for JSON syntax and skipped. It fails to deserialize where
/// [`super::mutate`] would see a shape it does not expect; read the pod as JSON then.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct PodView<'a>(#[serde(borrow)] Obj<Pod<'a>>);

#[derive(Debug, Deserialize)]
struct Pod<'a> {
    #[serde(borrow, default)]
    metadata: Option<Obj<Metadata<'a>>>,
    #[serde(borrow, default)]
    spec: Option<Obj<PodSpec<'a>>>,
}

impl PodView<'_> {
    /// `metadata.generateName`, for logs.
    pub fn generate_name(&self) -> Option<&str> {
        let metadata = &self.0.0.metadata.as_ref()?.0;
        metadata.generate_name.as_ref().map(|n| &*n.0)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    #[serde(borrow, default)]
    annotations: Option<Obj<AnnotationsIn<'a>>>,
    #[serde(borrow, default)]
    generate_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    owner_references: Option<Vec<Obj<OwnerReference<'a>>>>,
}

#[derive(Debug, Deserialize)]
struct AnnotationsIn<'a> {
    #[serde(rename = "warmpool.io/skip", borrow, default)]
    skip: Option<Str<'a>>,
    #[serde(rename = "kubernetes.io/config.mirror", default)]
    mirror: Present,
    #[serde(rename = "warmpool.io/injected", borrow, default)]
    injected: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
struct OwnerReference<'a> {
    #[serde(borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(default)]
    controller: Option<bool>,
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec<'a> {
    #[serde(borrow, default)]
    node_name: Option<Str<'a>>,
    #[serde(default)]
    node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    affinity: Option<Obj<Affinity>>,
    #[serde(default)]
    tolerations: Option<Vec<Toleration>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Affinity {
    #[serde(default)]
    node_affinity: Option<NodeAffinity>,
}

/// A string, borrowed from the input unless it holds escapes. (serde borrows a bare
/// `Cow<str>` field, but not one inside an `Option`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Str<'de>(pub Cow<'de, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(PhantomData<&'a str>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor(PhantomData))
    }
}

/// A struct read from a JSON object only: serde's derived structs also take an array of their
/// fields in order, which the JSON reading would call an unexpected shape.
#[derive(Debug)]
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjVisitor(PhantomData))
            .map(Obj)
    }
}

/// A member that counts by being there, whatever its value (`null` included).
#[derive(Debug, Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Present(true))
    }
}

/// The pod as JSON, of it only what the mutation reads (`POD_VIEW`): for the pods whose typed
/// [`PodView`] does not deserialize, so that they are decided as they are, with less to build.
pub fn read_set<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    (&POD_VIEW).deserialize(deserializer)
}

/// Which members of a JSON object are kept: all of a value, or of an object only the named
/// members (each with its own rule). A value that is not an object is kept whole, so that the
/// mutation sees the same shape, and skips for the same reason, as with the full pod.
enum Keep {
    All,
    Only(&'static [(&'static str, Keep)]),
    /// Of an array, each element by this rule.
    Each(&'static Keep),
}

/// The parts of a pod that [`super::mutate`] and the webhook's review read: the three annotations it
/// looks at (skip, mirror, injected; the annotations object itself stays, maybe empty, since the
/// patch's path depends on whether it exists), `generateName` (for logs), and in the spec
/// `nodeName`, `nodeSelector`, `affinity.nodeAffinity` and `tolerations`; of each owner reference
/// its `kind`, `controller` and `name` (a DaemonSet's pods are pinned to their node). Kept in step with
/// [`PodView`] and [`super::mutate`] here; the webhook's review tests compare the two decisions
/// on every fixture and shape.
static POD_VIEW: Keep = Keep::Only(&[
    (
        "metadata",
        Keep::Only(&[
            (
                "annotations",
                Keep::Only(&[
                    (SKIP_ANNOTATION, Keep::All),
                    (MIRROR_ANNOTATION, Keep::All),
                    (INJECTED_ANNOTATION, Keep::All),
                ]),
            ),
            ("generateName", Keep::All),
            (
                "ownerReferences",
                Keep::Each(&Keep::Only(&[
                    ("kind", Keep::All),
                    ("controller", Keep::All),
                    ("name", Keep::All),
                ])),
            ),
        ]),
    ),
    (
        "spec",
        Keep::Only(&[
            ("nodeName", Keep::All),
            ("nodeSelector", Keep::All),
            ("affinity", Keep::Only(&[("nodeAffinity", Keep::All)])),
            ("tolerations", Keep::All),
        ]),
    ),
]);

impl<'de> DeserializeSeed<'de> for &'static Keep {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self {
            Keep::All => Value::deserialize(deserializer),
            Keep::Only(_) | Keep::Each(_) => deserializer.deserialize_any(self),
        }
    }
}

/// Builds the kept members of an object; any other value is built whole, as `Value` does.
impl<'de> Visitor<'de> for &'static Keep {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Keep::Only(members) = self else {
            return Value::deserialize(de::value::MapAccessDeserializer::new(map));
        };
        let mut kept = Map::new();
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match members.iter().find(|(name, _)| *name == &*key.0) {
                Some((_, keep)) => {
                    let value = map.next_value_seed(keep)?;
                    kept.insert(key.0.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let Keep::Each(each) = self else {
            return Value::deserialize(de::value::SeqAccessDeserializer::new(seq));
        };
        let mut kept = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(value) = seq.next_element_seed(*each)? {
            kept.push(value);
        }
        Ok(Value::Array(kept))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }
}
