"""The FastAPI + SQLAlchemy test app: bearer tokens for authentication, categories in SQLite."""

# Annotations stay evaluated: FastAPI reads them, and the dependencies are local.

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel
from sqlalchemy import ForeignKey, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from clarion.broadcasting import Authorizer, Broadcaster
from clarion.broadcasting.integrations.sqlalchemy import broadcast_model
from clarion.broadcasting.integrations.starlette import SocketIdMiddleware, fastapi_router

from .domain import MASTER_KEY_B64, USERS, User, category_created_hook, category_saved, routes, vault_channel, wire


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(primary_key=True)


class Category(Base):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))


class AppUser:
    """The app's user object, as its own auth dependency gives it."""

    def __init__(self, user: User) -> None:
        self.id = user.id
        self.tenant_id = user.tenant_id
        self.display_name = user.name


class CategoryIn(BaseModel):
    name: str


class Abort(Exception):
    pass


def create_app(driver_url: str, db_path: str) -> FastAPI:
    engine = create_engine(f"sqlite:///{db_path}")
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add_all([Tenant(id=1), Tenant(id=2)])
    broadcaster = Broadcaster(driver_url, master_key_base64=MASTER_KEY_B64)
    wire(broadcaster, "fastapi")
    broadcast_model(broadcaster, Category, category_created_hook())
    authorizer = Authorizer(broadcaster, routes, user_info=lambda u: {"name": u.display_name})

    def current_user(authorization: Annotated[str | None, Header()] = None) -> AppUser | None:
        token = (authorization or "").removeprefix("Bearer ")
        found = next((u for u in USERS.values() if u.token == token), None)
        return AppUser(found) if found else None

    def signed_in(user: Annotated[AppUser | None, Depends(current_user)]) -> AppUser:
        if user is None:
            raise HTTPException(401, "sign in")
        return user

    app = FastAPI()
    app.add_middleware(SocketIdMiddleware)
    app.include_router(fastapi_router(authorizer, current_user))
    app.state.broadcaster = broadcaster

    @app.post("/categories")
    def create(body: CategoryIn, user: Annotated[AppUser, Depends(signed_in)]) -> dict[str, Any]:
        with Session(engine) as session, session.begin():
            category = Category(tenant_id=user.tenant_id, name=body.name)
            session.add(category)
            session.flush()
            return {"id": category.id}

    @app.put("/categories/{category_id}")
    def update(category_id: int, body: CategoryIn, user: Annotated[AppUser, Depends(signed_in)]) -> dict[str, Any]:
        with Session(engine) as session, session.begin():
            category = session.get(Category, category_id)
            if category is None or category.tenant_id != user.tenant_id:
                raise HTTPException(404)
            category.name = body.name
            category_saved.send("fastapi", category=category, session=session)
        return {"id": category_id}

    @app.put("/categories/{category_id}/then-fail")
    def update_then_fail(
        category_id: int, body: CategoryIn, user: Annotated[AppUser, Depends(signed_in)]
    ) -> dict[str, Any]:
        try:
            with Session(engine) as session, session.begin():
                category = session.get(Category, category_id)
                assert category is not None
                category.name = body.name
                category_saved.send("fastapi", category=category, session=session)
                raise Abort
        except Abort:
            raise HTTPException(409, "rolled back") from None

    @app.post("/vault")
    def vault(body: CategoryIn, user: Annotated[AppUser, Depends(signed_in)]) -> dict[str, Any]:
        broadcaster.on(vault_channel(user.tenant_id)).as_("SecretNote").with_({"text": body.name}).send_now()
        return {}

    return app
