# Modelled on: FastAPI in-memory item stores (ubclaunchpad/forum backend/main.py, jacobrak/image_clf_api
# main.py, and an APIRouter `_items` list from the code index). Pattern only: written anew.
from backend.db.main import InMemoryDatabase
from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI()
router = APIRouter(prefix="/items", tags=["items"])
db = InMemoryDatabase()

items = []
_by_id: dict[int, dict] = {}
likes = {}


class Item(BaseModel):
    name: str
    price: float


@app.get("/")
def root():
    return {"count": len(items)}  # quiet: read


@app.post("/items")
def create_item(item: Item):
    items.append(item)  # expect: SS105
    return item


@router.post("/")
async def create(item: dict):
    item_id = len(_by_id) + 1
    _by_id[item_id] = {"id": item_id, **item}  # expect: SS103
    return _by_id[item_id]


@router.delete("/{item_id}")
async def remove(item_id: int):
    if item_id not in _by_id:
        raise HTTPException(status_code=404)
    del _by_id[item_id]  # expect: SS103


@router.put("/{item_id}/like")
async def like(item_id: int):
    likes[item_id] = likes.get(item_id, 0) + 1  # expect: SS103
    return {"likes": likes[item_id]}


@app.get("/db-items")
def read_db_items():
    return db.get_items()  # quiet: client object, not a container


@app.post("/db-items")
def store_db_item(item: Item):
    return db.store_item(item)  # quiet: client object method


@router.get("/")
async def list_items():
    found = [i for i in _by_id.values()]
    found.append({"id": 0})  # quiet: local list
    return found


app.include_router(router)
